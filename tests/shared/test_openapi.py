"""Each service's OpenAPI documents its real errors: the {"error": {...}} body on every error status,
and the statuses each operation can answer (the fuzz tests hold the services to it)."""

import pytest

from services.profiler.main import create_app as profiler_app
from services.search.main import create_app as search_app
from services.trainer.main import create_app as trainer_app

ERROR_REF = "#/components/schemas/ErrorBody"


@pytest.fixture(params=["profiler", "search", "trainer"])
def openapi(request, sqlite_settings) -> tuple[str, dict]:
    create = {"profiler": profiler_app, "search": search_app, "trainer": trainer_app}[request.param]
    return request.param, create(sqlite_settings).openapi()


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_status_has_the_error_body(openapi):
    _, schema = openapi
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) == {"error"}
    for name, operation in operations(schema):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, (
                    name,
                    status,
                )


def test_statuses_follow_what_each_operation_takes(openapi):
    service, schema = openapi
    for name, operation in operations(schema):
        statuses = {int(s) for s in operation["responses"]}
        if operation.get("requestBody"):
            assert {408, 413, 415, 422} <= statuses, name
        if operation.get("security"):
            assert 401 in statuses, name
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            assert {404, 422} <= statuses, name
        if service != "search" and not name.endswith("/healthz"):
            assert 503 in statuses, name
