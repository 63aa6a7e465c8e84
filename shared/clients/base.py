"""What every service client shares: auth, the JSON error shape turned into ServiceError."""

from typing import Any, ClassVar, Self

import httpx

from shared.settings import Settings


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

    def __init__(self, http: httpx.Client, *, token: str | None = None):
        self.http = http
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float = 120.0) -> Self:
        token = settings.api_token.get_secret_value() if settings.api_token else None
        return cls(httpx.Client(base_url=settings.service_url(cls.service), timeout=timeout_s), token=token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise service_error(response)
        return response.json() if response.content else None

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
