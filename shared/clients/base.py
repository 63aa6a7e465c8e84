"""What every service client shares: auth, the JSON error shape turned into ServiceError, and retrying
what a service asks to be retried (503 and 429, after its Retry-After) or a service that cannot be
reached, with back-off, for at most `retry_s` seconds in all; then one ServiceError."""

import time
from typing import Any, ClassVar, Self

import httpx

from shared.settings import Settings

RETRY_STATUSES = {429, 503}  # what the services ask to be retried, with a Retry-After
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 15.0


class ServiceError(Exception):
    """A service answered with an error; carries the service's {"error": {...}} fields."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class ServiceClient:
    """Base of the per-service clients. `http` is any httpx.Client (a TestClient in tests)."""

    service: ClassVar[str]

    def __init__(self, http: httpx.Client, *, token: str | None = None, retry_s: float = 0.0):
        self.http = http
        self.retry_s = retry_s  # 0: every answer as it comes (tests drive services directly)
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float = 120.0) -> Self:
        token = settings.api_token.get_secret_value() if settings.api_token else None
        http = httpx.Client(base_url=settings.service_url(cls.service), timeout=timeout_s)
        return cls(http, token=token, retry_s=settings.client_retry_s)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        if response.is_error:
            raise service_error(response)
        return response.json() if response.content else None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, sent again while the service says to retry (503, 429) or cannot be reached,
        waiting its Retry-After or a doubling back-off, until retry_s has passed."""
        deadline = time.monotonic() + self.retry_s
        wait = RETRY_FIRST_S
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent: safe to repeat
                if time.monotonic() + wait > deadline:
                    where = self.http.base_url
                    raise ServiceError(503, "unreachable", f"{where} does not answer ({exc})") from None
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                wait = max(wait, _retry_after(response))
                if time.monotonic() + wait > deadline:
                    return response
            time.sleep(wait)
            wait = min(2 * wait, RETRY_MAX_S)

    def health(self) -> dict:
        return self.request("GET", "/healthz")

    def ready(self) -> dict:
        return self.request("GET", "/readyz")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def service_error(response: httpx.Response) -> ServiceError:
    try:
        error = response.json()["error"]
        return ServiceError(response.status_code, error["code"], error["message"], error.get("details"))
    except (ValueError, KeyError, TypeError):
        return ServiceError(response.status_code, "http_error", response.text[:500])


def _retry_after(response: httpx.Response) -> float:
    """The seconds a Retry-After header asks for (0 without one, or with a date)."""
    try:
        return min(float(response.headers.get("Retry-After", 0)), RETRY_MAX_S)
    except ValueError:
        return 0.0
