"""One JSON error shape for every service: {"error": {"code", "message", "details"}}.

Every failure answers in it, unexpected ones included: those are logged here with their traceback and
answered as a 500 on a connection that stays open. A database that is down or hung is a 503 with
Retry-After whose message names no host, port or database (the log has the driver's reason).
"""

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("unast.errors")

RETRY_AFTER_S = 5  # what a 503 tells the client to wait before trying again

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "not_ready",
}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: invalid_input, unauthorized, not_found, ...")
    message: str = Field(description="For people: what was wrong, naming the field when there is one.")
    details: Any = Field(
        None, description="invalid_input: a list of {field, message, type}; otherwise what helps, or null."
    )


class ErrorBody(BaseModel):
    """The body of every error response of every service (the OpenAPI documents it on each)."""

    error: ErrorDetail


class ApiError(HTTPException):
    """Raised by routes and services; becomes a JSON error response with this status. An
    HTTPException, so that FastAPI lets it through from a body read (shared/guard.py raises there)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(status, message, dict(headers or {}))
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message

    def response(self) -> JSONResponse:
        return JSONResponse(
            error_body(self.status, self.message, code=self.code, details=self.details),
            self.status,
            headers=self.headers,
        )


def not_found(what: str, key: object) -> ApiError:
    return ApiError(404, f"{what} {key!r} not found")


def invalid(field: str, message: str, **details: Any) -> ApiError:
    """A 422 naming the offending field, shaped like pydantic's own validation errors."""
    return ApiError(422, f"{field}: {message}", details=[{"field": field, "message": message, **details}])


def error_body(status: int, message: str, *, code: str | None = None, details: Any = None) -> dict:
    return {"error": {"code": code or _CODES.get(status, "error"), "message": message, "details": details}}


def unauthorized(message: str = "missing or wrong bearer token") -> ApiError:
    return ApiError(401, message, details={"header": "Authorization"}, headers={"WWW-Authenticate": "Bearer"})


def database_unavailable() -> ApiError:
    return ApiError(
        503,
        "the database is unavailable; try again later",
        code="database_unavailable",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _field(loc: Iterable) -> str:
    return ".".join(str(part) for part in loc)


MAX_DETAILS = 100  # a body with a million bad values answers with its first problems and their count


def invalid_input(errors: list[dict], prefix: tuple = ()) -> ApiError:
    """A 422 from pydantic's errors, each naming its field (after `prefix`, e.g. ("body",)): the first
    MAX_DETAILS, and how many in all."""
    details = [
        {"field": _field((*prefix, *e["loc"])), "message": e["msg"], "type": e["type"]}
        for e in errors[:MAX_DETAILS]
    ]
    fields = ", ".join(d["field"] for d in details[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return ApiError(422, f"invalid input: {fields}{more}", details=details)


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (no route, a method the path does not take), and any HTTPException."""
    message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "error")
    headers = exc.headers
    path = request.url.path
    if exc.status_code == 404 and exc.detail == "Not Found":  # the router's: no route has this path
        slash = "; paths end without a slash" if path.endswith("/") and path != "/" else ""
        message = f"no route {request.method} {path}{slash}"
    elif exc.status_code == 405:  # Starlette's Allow names the methods of the first route on the path only
        allowed = allowed_methods(request)
        message = f"{request.method} is not allowed on {path}; allowed: {', '.join(allowed)}"
        headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return JSONResponse(error_body(exc.status_code, message), exc.status_code, headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on the request's path."""
    scope = {k: v for k, v in request.scope.items() if k != "fastapi"}  # as it was before routing
    routes = request.app.router.routes
    return [m for m in METHODS if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in routes)]


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return invalid_input(list(exc.errors())).response()


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: the database failed (%s)", request.method, request.url.path, reason(exc))
    return database_unavailable().response()


def reason(exc: BaseException) -> str:
    """One line on why a call failed (a driver's error: its first line), for logs."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


def _internal_error() -> JSONResponse:
    return JSONResponse(error_body(500, "internal error", code="internal_error"), 500)


async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
    return _internal_error()


class CatchUnexpected:
    """Answers an exception no handler took as a JSON 500 and logs it with its traceback.

    Starlette's own last resort answers and then re-raises, and the server, seeing an exception after
    a response, drops the kept-alive connection without saying so; here the exception ends with the
    response and the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception:
            if started:  # too late for an error response: let the server close the connection
                raise
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await _internal_error()(scope, receive, send)


DATABASE_ERRORS = (sa.OperationalError, sa.InterfaceError, sa.TimeoutError)


def install_error_handlers(app: FastAPI, *, database: bool = False) -> None:
    """The handlers of every service; `database`: also the 503 of a database that is down or hung."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    if database:
        for error in DATABASE_ERRORS:
            app.add_exception_handler(error, _database_error)
