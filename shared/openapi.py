"""Every service's OpenAPI documents its real errors: the `{"error": {...}}` body, and each status an
operation can answer, derived from the route (a token, a body, path parameters, a database) so that
the documentation cannot drift from what shared/guard.py and shared/errors.py do.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from shared.errors import ErrorBody
from shared.guard import depends_on_token, params

ERROR_SCHEMA = "ErrorBody"
DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or wrong bearer token (when UNAST_API_TOKEN is set)",
    404: "Not found",
    408: "The body did not arrive within UNAST_BODY_TIMEOUT_S",
    409: "Conflict with the resource's state",
    413: "Body larger than UNAST_MAX_BODY_BYTES",
    415: "The body is not JSON (Content-Type: application/json)",
    422: "Invalid input; details name each field",
    429: "Too many requests at once; try again later",
    503: "A dependency (the database) is unavailable; Retry-After says when to try again",
}
HEALTH_PATHS = ("/healthz",)


def error_statuses(route: Any, *, database: bool) -> set[int]:
    """The error statuses a route can answer, beyond those it declares itself."""
    statuses: set[int] = set()
    if params(route.dependant, "path_params"):
        statuses |= {404, 422}
    if params(route.dependant, "query_params") or params(route.dependant, "header_params"):
        statuses.add(422)
    if route.body_field is not None:
        statuses |= {408, 413, 415, 422}
    if depends_on_token(route.dependant):
        statuses.add(401)
    if database and route.path not in HEALTH_PATHS:
        statuses.add(503)
    return statuses


def document_errors(app: FastAPI, *, database: bool) -> None:
    """Make app.openapi() document the error body and every error status of every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components[ERROR_SCHEMA] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(components[ERROR_SCHEMA].pop("$defs", {}))
        error_content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}
        for route in iter_route_contexts(app.routes):  # as included: prefixes, router dependencies
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods:
                operation = schema["paths"][route.path_format][method.lower()]
                responses = operation.setdefault("responses", {})
                declared = {int(code) for code in responses if code.isdigit() and int(code) >= 400}
                for status in sorted(declared | error_statuses(route, database=database)):
                    response = responses.setdefault(str(status), {})
                    response.setdefault("description", DESCRIPTIONS.get(status, "Error"))
                    if status == 422 or not response.get("content"):
                        response["content"] = error_content
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
