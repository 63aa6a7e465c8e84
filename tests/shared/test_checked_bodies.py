"""A large body is parsed and validated in a checker process, not in the service's (shared/guard.py), and
reaches its route as checked (shared/api.py's CheckedRoute); /healthz answers meanwhile (issue 20,
item 6). Python's JSON parser and pydantic hold the GIL for their whole run: in the service's process,
a thread would hold /healthz as long as the body takes (seconds for a few MB)."""

import gc
import json
import pickle
import threading
import time

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.requests import Request

from services.profiler.main import create_app as profiler_app
from services.search.main import create_app as search_app
from services.trainer.main import create_app as trainer_app
from shared import guard
from shared.api import CheckedRoute, TokenDep, service_app
from shared.errors import MAX_DETAILS
from shared.settings import Settings
from tests.serving import serving
from tests.shared.test_api import assert_error

HEALTH_BOUND_S = 1.0  # generous for a loaded 2-core CI machine; benchmarks/healthz_under_load.py has figures


class Bag(BaseModel):
    items: list[int]
    names: dict[str, str] = {}


def make_app(**settings) -> FastAPI:
    app = service_app("test", Settings(**settings), description="test app")
    router = APIRouter(route_class=CheckedRoute)

    @router.post("/bags", dependencies=[TokenDep])
    def count(bag: Bag) -> dict:
        return {"items": len(bag.items), "sum": sum(bag.items), "names": len(bag.names)}

    app.include_router(router)
    return app


def large(**fields) -> dict:
    """A Bag body over guard.SMALL_BODY."""
    return {"items": list(range(100_000)), **fields}


@pytest.fixture
def in_checkers_only(monkeypatch):
    """Fails a check or a parse of the body in this process: a large one is checked elsewhere."""

    def here(*_args):
        raise AssertionError("a large body was checked or parsed in the service's process")

    monkeypatch.setattr(guard, "check_json", here)
    monkeypatch.setattr(Request, "json", here)


def test_a_large_body_reaches_the_route_as_checked(in_checkers_only):
    payload = large()
    assert len(json.dumps(payload)) > guard.SMALL_BODY
    r = TestClient(make_app()).post("/bags", json=payload)
    assert r.json() == {"items": 100_000, "sum": sum(range(100_000)), "names": 0}


def test_a_large_invalid_body_is_a_422_with_its_first_problems_and_their_count(in_checkers_only):
    r = TestClient(make_app()).post("/bags", json={"items": ["x"] * 200_000})
    err = assert_error(r, 422, "invalid_input")
    assert len(err["details"]) == MAX_DETAILS
    assert (err["details"][0]["field"], err["details"][0]["type"]) == ("body.items.0", "int_type")
    assert "(and 199995 more)" in err["message"]


def test_a_large_body_with_a_nul_is_a_422_naming_the_field(in_checkers_only):
    r = TestClient(make_app()).post("/bags", json=large(names={"a": "ok", "b": "x\u0000"}))
    assert assert_error(r, 422, "invalid_input")["details"][0]["field"] == "body.names.b"


def test_a_large_body_without_the_token_is_not_checked(in_checkers_only):
    r = TestClient(make_app(api_token="tok")).post("/bags", json=large())
    assert_error(r, 401, "unauthorized")


def test_a_large_bodys_objects_are_out_of_the_collectors_walks_until_its_request_ends():
    """A full collection walks every object in one step with the GIL held: a valid 16 MB body's two
    million objects held /healthz for half a second. Frozen, no collection walks them (guard.py)."""
    app = service_app("test", Settings(), description="test app")
    router = APIRouter(route_class=CheckedRoute)
    seen = {}

    @router.post("/bags")
    def frozen(bag: Bag) -> dict:
        seen.update(frozen=gc.get_freeze_count(), collecting=gc.isenabled())
        return {"items": len(bag.items)}

    app.include_router(router)
    assert gc.get_freeze_count() == 0
    r = TestClient(app).post("/bags", json=large(names={str(i): "x" for i in range(50_000)}))
    assert r.json() == {"items": 100_000}
    assert seen["frozen"] > 50_000 and seen["collecting"]  # the body's dict among them; the collector on
    assert gc.get_freeze_count() == 0 and gc.isenabled()  # thawed when the request ended
    r = TestClient(app).post("/bags", json={"items": [1]})  # a small body: checked here, nothing frozen
    assert r.json() == {"items": 1} and seen["frozen"] == 0


def body_routes(app: FastAPI) -> list:
    return [r for r in iter_route_contexts(app.routes) if getattr(r, "body_field", None) is not None]


def test_every_body_route_can_be_checked_apart(sqlite_settings):
    for app in (profiler_app(sqlite_settings), search_app(sqlite_settings), trainer_app(sqlite_settings)):
        for route in body_routes(app):  # its type travels to a checker by its import path
            assert pickle.loads(pickle.dumps(guard.body_annotation(route))) is not None, route.path
    for app in (profiler_app(sqlite_settings), search_app(sqlite_settings)):
        routes = body_routes(app)
        assert routes and all(isinstance(r.original_route, CheckedRoute) for r in routes)


# -- on a real server: /healthz while a maximal body is checked ---------------------------------------


def health_while_posting(url: str, path: str, body: bytes) -> tuple[int, list[float]]:
    """(the POST's status, the latencies of /healthz asked every 20 ms while it ran)."""
    status = []
    headers = {"Content-Type": "application/json"}
    post = threading.Thread(
        target=lambda: status.append(httpx.post(url + path, content=body, headers=headers, timeout=300))
    )
    latencies = []
    with httpx.Client(base_url=url, timeout=60) as client:
        client.get("/healthz")  # connected before the body goes
        post.start()
        while post.is_alive():
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)
    post.join()
    return status[0].status_code, latencies


MAX_BODY = 2 * 1024 * 1024  # UNAST_MAX_BODY_BYTES here: a default-sized one takes a minute to check


def fill(make, limit: int) -> bytes:
    """A body make(n) just under the limit."""
    n = limit * 1000 // len(make(1000))
    while len(body := make(n)) > limit:
        n = n * 99 // 100
    return body


def search_zeros(n: int) -> bytes:  # the reproduction, {"slots": [0 x 1e6]}, at the limit
    return json.dumps({"slots": [0] * n}).encode()


def estimate_keys(n: int) -> bytes:  # the 600k `choices` keys, at the limit
    choices = {f"b{i}.attn": "x" for i in range(n)}
    return json.dumps({"shape": "tiny", "length": 8, "architecture": {"choices": choices}}).encode()


def search_slots(n: int) -> bytes:  # valid: it reaches the route, which refuses it past the most slots
    return json.dumps(
        {"slots": [{"id": f"s{i}", "candidates": [{"id": "a", "score": 0}]} for i in range(n)]}
    ).encode()


@pytest.mark.parametrize(
    ("service", "path", "make"),
    [
        ("search", "/v1/search", search_zeros),
        ("search", "/v1/search", search_slots),
        ("profiler", "/v1/devices/1/estimate", estimate_keys),
    ],
)
def test_healthz_answers_while_a_maximal_body_is_checked(sqlite_settings, service, path, make):
    settings = sqlite_settings.model_copy(update={"max_body_bytes": MAX_BODY})
    app = {"search": search_app, "profiler": profiler_app}[service](settings)
    body = fill(make, MAX_BODY)
    with serving(app) as url:
        status, latencies = health_while_posting(url, path, body)
    assert status == 422
    assert len(latencies) >= 3 and max(latencies) < HEALTH_BOUND_S, (len(body), max(latencies))
