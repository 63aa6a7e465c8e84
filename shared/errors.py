"""One JSON error shape for every service: {"error": {"code", "message", "details"}}."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "not_ready",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    """The body of every error response, for `responses=` in OpenAPI."""

    error: ErrorDetail


class ApiError(Exception):
    """Raised by routes and services; becomes a JSON error response with this status."""

    def __init__(self, status: int, message: str, *, code: str | None = None, details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details


def not_found(what: str, key: object) -> ApiError:
    return ApiError(404, f"{what} {key!r} not found")


def invalid(field: str, message: str, **details: Any) -> ApiError:
    """A 422 naming the offending field, shaped like pydantic's own validation errors."""
    return ApiError(422, f"{field}: {message}", details=[{"field": field, "message": message, **details}])


def error_body(status: int, message: str, *, code: str | None = None, details: Any = None) -> dict:
    return {"error": {"code": code or _CODES.get(status, "error"), "message": message, "details": details}}


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.message, code=exc.code, details=exc.details), exc.status)


async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    message = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "error")
    return JSONResponse(error_body(exc.status_code, message), exc.status_code, headers=exc.headers)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    details = [
        {"field": _field(err["loc"]), "message": err["msg"], "type": err["type"]} for err in exc.errors()
    ]
    fields = ", ".join(d["field"] for d in details[:5])
    return JSONResponse(error_body(422, f"invalid input: {fields}", details=details), 422)


async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
    return JSONResponse(error_body(500, "internal error", code="internal_error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
