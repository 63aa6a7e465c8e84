"""What a request must pass before its route runs, in the order a client should hear about it.

FastAPI reads and validates a body before it runs the route's dependencies (a request without its
token but with a bad body would hear about the body), reads a body of any content type, and takes
JSON leniently ("10" and true are numbers to it). This middleware finds the route first and checks:

1. the bearer token, on routes that take one (401 with `WWW-Authenticate: Bearer`);
2. no NUL character in its path or query parameters (422: PostgreSQL cannot store one);
3. the declared size (413);
4. the body, on routes that take one: received within `body_timeout_s` (408) and `max_body_bytes`
   (413, counted on the bytes received, chunked bodies too), sent as JSON (415), no NUL or unpaired
   surrogate in its strings (422), and JSON's types taken strictly: a string or a boolean is not a
   number (422 naming the field; an integer is still a number where a float is expected).

Then the route runs on the body received, and FastAPI validates it as usual.
"""

import hmac
import json
from typing import Annotated, Any
from urllib.parse import parse_qsl

import anyio
from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import ApiError, invalid, invalid_input, unauthorized
from shared.settings import Settings

JSON_TYPE = "application/json"

_bearer = HTTPBearer(
    auto_error=False, description="Required on mutating endpoints when UNAST_API_TOKEN is set."
)


def token_ok(settings: Settings, authorization: str | None) -> bool:
    """Whether an Authorization header carries the configured token (any does when none is set)."""
    if settings.api_token is None:
        return True
    scheme, given = get_authorization_scheme_param(authorization)
    expected = settings.api_token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), expected)


def require_token(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Dependency of mutating endpoints. The guard checks it before anything else; the dependency
    marks the route for the guard and documents the scheme in the OpenAPI."""
    if not token_ok(request.app.state.settings, request.headers.get("authorization")):
        raise unauthorized()


class _Disconnected(Exception):
    """The client went away while sending its body: nobody to answer."""


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        # per route, by id (routes are not hashable; they live as long as the app)
        self._takes_token: dict[int, bool] = {}
        self._body_types: dict[int, TypeAdapter] = {}
        self._query_params: dict[int, set[str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, path_params = find_route(scope)
        takes_body = route is not None and route.body_field is not None
        try:
            self._check_head(scope, route, path_params)
            if not takes_body:
                return await self.app(scope, self._counting(receive), send)
            body = await self._receive_body(receive)
            self._check_body(scope, route, body)
        except ApiError as exc:
            return await exc.response()(scope, receive, send)
        except _Disconnected:
            return
        await self.app(scope, _replaying(body, receive), send)

    # -- the request line and headers --------------------------------------------------------------

    def _check_head(self, scope: Scope, route: APIRoute | None, path_params: dict[str, Any]) -> None:
        headers = Headers(scope=scope)
        if route is not None:
            if self._token_route(route) and not token_ok(self.settings, headers.get("authorization")):
                raise unauthorized()
            for name, value in path_params.items():
                if "\x00" in str(value):
                    raise invalid(f"path.{name}", "NUL characters are not allowed")
            query = scope.get("query_string", b"").decode("latin-1")
            for name, value in parse_qsl(query, keep_blank_values=True):
                if "\x00" in value and name in self._query_names(route):
                    raise invalid(f"query.{name}", "NUL characters are not allowed")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            raise self._too_large()

    def _token_route(self, route: APIRoute) -> bool:
        if id(route) not in self._takes_token:
            self._takes_token[id(route)] = depends_on_token(route.dependant)
        return self._takes_token[id(route)]

    def _query_names(self, route: APIRoute) -> set[str]:
        """The query parameters the route reads (others it ignores, NUL or not)."""
        if id(route) not in self._query_params:
            self._query_params[id(route)] = {p.alias for p in params(route.dependant, "query_params")}
        return self._query_params[id(route)]

    # -- the body ----------------------------------------------------------------------------------

    def _too_large(self) -> ApiError:
        return ApiError(
            413, f"request body exceeds {self.settings.max_body_bytes} bytes", headers={"Connection": "close"}
        )

    def _counting(self, receive: Receive) -> Receive:
        """For routes that take no body: whatever the app reads still counts against the limit."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.settings.max_body_bytes:  # raised into the read: the route answers 413
                    raise HTTPException(413, self._too_large().message)
            return message

        return counting_receive

    async def _receive_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.settings.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.settings.max_body_bytes:
                    raise self._too_large()
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        raise ApiError(
            408,
            f"the request body did not arrive within {self.settings.body_timeout_s:g} s",
            headers={"Connection": "close"},
        )

    def _check_body(self, scope: Scope, route: APIRoute, body: bytes) -> None:
        if not body:
            return  # FastAPI says what is missing
        content_type = Headers(scope=scope).get("content-type")
        if not _is_json(content_type):
            raise ApiError(
                415,
                f"send the body as JSON, with Content-Type: {JSON_TYPE} "
                f"(got {content_type or 'no Content-Type'})",
                details={"header": "Content-Type", "expected": JSON_TYPE},
            )
        if b"\\u" in body:  # NUL and unpaired surrogates can only be written as \u escapes
            try:
                problem = _bad_text(json.loads(body), ("body",))
            except ValueError:
                problem = None  # not JSON: the strict validation below says so
            if problem is not None:
                raise invalid(*problem)
        try:
            self._body_type(route).validate_json(body, strict=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            raise invalid_input([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None

    def _body_type(self, route: APIRoute) -> TypeAdapter:
        if id(route) not in self._body_types:
            field = route.body_field
            self._body_types[id(route)] = TypeAdapter(
                Annotated[field.field_info.annotation, field.field_info]
            )
        return self._body_types[id(route)]


def find_route(scope: Scope) -> tuple[APIRoute | None, dict[str, Any]]:
    """The API route that will answer this request, with its path parameters; None for others."""
    for route in getattr(scope.get("app"), "routes", ()):
        match, child = route.matches(scope)
        if match is Match.FULL:
            return (route if isinstance(route, APIRoute) else None), child.get("path_params", {})
    return None, {}


def params(dependant: Dependant, kind: str) -> list:
    """The route's parameters of one kind ("path_params", "query_params", ...), its dependencies' too."""
    return [*getattr(dependant, kind), *(p for d in dependant.dependencies for p in params(d, kind))]


def depends_on_token(dependant: Dependant) -> bool:
    return any(d.call is require_token or depends_on_token(d) for d in dependant.dependencies)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json"))


def _bad_text(value: Any, loc: tuple) -> tuple[str, str] | None:
    """(field, problem) of the first string a database could not store, or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return ".".join(map(str, loc)), "NUL characters are not allowed"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return ".".join(map(str, loc)), "unpaired surrogates are not allowed"
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and (problem := _bad_text(key, (*loc, "<key>"))):
            return problem
        if problem := _bad_text(item, (*loc, key)):
            return problem
    return None


def _replaying(body: bytes, receive: Receive) -> Receive:
    """The body already received, once; then the client's own messages (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
