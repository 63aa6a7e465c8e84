"""The behaviour every service shares: error shape, body limit, bearer token."""

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from shared import guard
from shared.api import TokenDep, service_app
from shared.errors import MAX_DETAILS, ApiError
from shared.settings import Settings


class Item(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=1)


def make_client(**settings) -> TestClient:
    app = service_app("test", Settings(max_body_bytes=2048, **settings), description="test app")

    @app.post("/items", dependencies=[TokenDep])
    def create(item: Item) -> Item:
        return item

    @app.get("/items/{name}")
    def get(name: str):
        raise ApiError(404, f"item {name!r} not found")

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    return TestClient(app, raise_server_exceptions=False)


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def test_valid_request_passes():
    assert make_client().post("/items", json={"name": "a", "size": 1}).json() == {"name": "a", "size": 1}


def test_invalid_input_is_422_naming_the_field():
    err = assert_error(make_client().post("/items", json={"name": "a", "size": 0}), 422, "invalid_input")
    assert [d["field"] for d in err["details"]] == ["body.size"]


def test_malformed_json_is_422():
    r = make_client().post("/items", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_input")


def test_not_found_and_unknown_route_and_method():
    client = make_client()
    assert "not found" in assert_error(client.get("/items/x"), 404, "not_found")["message"]
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.delete("/items"), 405, "method_not_allowed")


def test_unexpected_error_hides_internals():
    err = assert_error(make_client().get("/boom"), 500, "internal_error")
    assert "secret" not in err["message"]


def test_oversized_body_is_413_by_content_length():
    r = make_client().post("/items", json={"name": "a" * 5000, "size": 1})
    assert_error(r, 413, "payload_too_large")


def test_oversized_chunked_body_is_413():
    def chunks():  # no Content-Length: the limit must count the bytes received
        for _ in range(10):
            yield b" " * 500

    r = make_client().post("/items", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")


@pytest.mark.parametrize(("header", "status"), [(None, 401), ("Bearer wrong", 401), ("Bearer tok", 200)])
def test_bearer_token_guards_mutations(header, status):
    client = make_client(api_token="tok")
    headers = {"Authorization": header} if header else {}
    r = client.post("/items", json={"name": "a", "size": 1}, headers=headers)
    assert r.status_code == status
    if status == 401:
        assert_error(r, 401, "unauthorized")
    assert client.get("/healthz").status_code == 200  # reads stay open


def test_health_and_docs():
    client = make_client()
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").json()["status"] == "ready"
    assert "swagger" in client.get("/docs").text.lower()


def test_readyz_is_503_when_a_dependency_fails():
    app = service_app("t", Settings(), description="t", ready_check=lambda: 1 / 0)
    assert_error(TestClient(app).get("/readyz"), 503, "not_ready")


def test_a_new_app_never_inherits_a_dead_apps_route_answers(monkeypatch):
    """What the guard works out about a route stays with that route: apps come and go (tests, reloads)
    and a new route may take a dead one's memory address, which once made /healthz demand a token.
    Here every object has the same address, the worst case of that reuse."""
    monkeypatch.setattr(guard, "id", lambda _: 0, raising=False)
    client = make_client(api_token="tok")
    item = client.post("/items", json={"name": "a", "size": 1}, headers={"Authorization": "Bearer tok"})
    assert item.status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/items/x").status_code == 404


def test_a_body_with_many_bad_values_answers_with_the_first_problems_and_their_count():
    app = service_app("test", Settings(), description="test app")

    class Many(BaseModel):
        sizes: list[int] = Field(max_length=100_000)

    @app.post("/many")
    def many(body: Many) -> int:
        return len(body.sizes)

    r = TestClient(app).post("/many", json={"sizes": ["x"] * 5000})
    err = assert_error(r, 422, "invalid_input")
    assert len(err["details"]) == MAX_DETAILS and err["details"][0]["field"] == "body.sizes.0"
    assert err["message"].endswith("(and 4995 more)")
    assert len(r.content) < 50_000  # the answer stays small whatever the body held
