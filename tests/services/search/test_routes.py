"""POST /v1/search and /v1/search/sweep over HTTP: the contract, every bad input, limits, liveness."""

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from services.search.main import create_app
from services.search.synthetic import synthetic_budgets, synthetic_slots
from shared.clients.base import ServiceError
from shared.clients.search import SearchClient
from shared.schemas.search import SearchRequest, SweepRequest
from shared.settings import Settings


def block(i: int, teacher=(2.0, 100), identity=(0.0, 0), mid=(1.0, 50), scores=(0.0, 0.5, 0.2)):
    return {
        "id": f"block{i}.attn",
        "candidates": [
            {
                "id": "teacher",
                "score": scores[0],
                "costs": {"latency_ms": teacher[0], "params": teacher[1]},
                "reference": True,
            },
            {
                "id": "identity",
                "score": scores[1],
                "costs": {"latency_ms": identity[0], "params": identity[1]},
            },
            {"id": "half", "score": scores[2], "costs": {"latency_ms": mid[0], "params": mid[1]}},
        ],
    }


@pytest.fixture
def client():
    with TestClient(create_app(Settings(max_body_bytes=200_000))) as c:
        yield c


def body(**overrides):
    return {
        "slots": [block(i) for i in range(4)],
        "budgets": [{"cost": "latency_ms", "fraction": 0.5}],
    } | overrides


def error(response, status=422):
    assert response.status_code == status, response.text[:500]
    return response.json()["error"]


def test_search_returns_k_diverse_solutions(client):
    r = client.post("/v1/search", json=body(k=3, max_overlap=0.5, gap=0))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "complete"
    first, *rest = out["solutions"]
    # 4 slots, latency <= 4.0: two halves (0.4) beat any mix with teachers and identities
    assert first["choices"] == {f"block{i}.attn": "half" for i in range(4)}
    assert first == first | {"rank": 1, "objective": 0.8, "optimal": True, "gap": 0.0}
    assert first["costs"] == {"latency_ms": 4.0, "params": 200.0}
    for s in out["solutions"]:
        assert s["costs"]["latency_ms"] <= 4.0 and s["bound"] <= s["objective"]
    for a, b in zip(out["solutions"], rest, strict=False):
        assert sum(a["choices"][k] == b["choices"][k] for k in a["choices"]) <= 2
    assert [s["rank"] for s in out["solutions"]] == [1, 2, 3]


def test_pins_and_excludes_restrict_choices(client):
    slots = [block(i) for i in range(4)]
    slots[3]["pin"] = "teacher"
    slots[0]["exclude"] = ["half"]
    out = client.post("/v1/search", json=body(slots=slots, gap=0)).json()
    choices = out["solutions"][0]["choices"]
    assert choices["block3.attn"] == "teacher" and choices["block0.attn"] != "half"


def test_fewer_diverse_architectures_than_k_is_exhausted(client):
    out = client.post("/v1/search", json=body(slots=[block(0)], budgets=[], k=5, max_overlap=0)).json()
    assert out["status"] == "exhausted" and len(out["solutions"]) == 3
    assert "only 3" in out["message"]


def test_infeasible_budgets_are_422_with_the_minimum_reachable(client):
    budgets = [{"cost": "latency_ms", "max": 0.5}, {"cost": "params", "max": 0}]
    slots = [block(i, identity=(0.25, 0)) for i in range(4)]
    err = error(client.post("/v1/search", json=body(slots=slots, budgets=budgets)))
    assert err["code"] == "infeasible"
    assert err["details"] == [
        {"cost": "latency_ms", "max": 0.5, "min_achievable": 1.0},
        {"cost": "params", "max": 0.0, "min_achievable": 0.0},
    ]


def with_candidate(field, value):
    slots = [block(i) for i in range(4)]
    slots[1]["candidates"][2][field] = value
    return slots


BAD = {
    "no slots": (body(slots=[]), "body.slots"),
    "no candidates": (body(slots=[{"id": "a", "candidates": []}]), "body.slots.0.candidates"),
    "duplicate slot": (body(slots=[block(0), block(0)]), "body.slots.1.id"),
    "duplicate candidate": (
        body(slots=[{**block(0), "candidates": block(0)["candidates"][:1] * 2}]),
        "body.slots.0.candidates.1.id",
    ),
    "negative score": (body(slots=with_candidate("score", -0.1)), "body.slots.1.candidates.2.score"),
    "nan score": (body(slots=with_candidate("score", "NaN")), "body.slots.1.candidates.2.score"),
    "inf cost": (
        body(slots=with_candidate("costs", {"latency_ms": "Infinity", "params": 1})),
        "body.slots.1.candidates.2.costs.latency_ms",
    ),
    "negative cost": (
        body(slots=with_candidate("costs", {"latency_ms": -1, "params": 1})),
        "body.slots.1.candidates.2.costs.latency_ms",
    ),
    "budget on a missing cost": (body(budgets=[{"cost": "memory_bytes", "max": 1}]), "body.budgets.0.cost"),
    "budget without max or fraction": (body(budgets=[{"cost": "params"}]), "body.budgets.0"),
    "fraction without references": (
        body(slots=[{**block(0), "candidates": block(0)["candidates"][1:]}]),
        "body.budgets.0.fraction",
    ),
    "k below 1": (body(k=0), "body.k"),
    "k above the limit": (body(k=1001), "body.k"),
    "time limit above the limit": (body(time_limit_s=601), "body.time_limit_s"),
    "overlap above 1": (body(max_overlap=1.5), "body.max_overlap"),
    "pin of an unknown candidate": (body(slots=[{**block(0), "pin": "nope"}]), "body.slots.0.pin"),
    "everything excluded": (
        body(slots=[{**block(0), "exclude": ["teacher", "identity", "half"]}]),
        "body.slots.0.exclude",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_422_naming_the_field(client, case):
    payload, field = BAD[case]
    err = error(client.post("/v1/search", json=payload))
    assert field in [d["field"] for d in err["details"]], err


def test_slot_and_candidate_limits():
    settings = Settings(search_max_slots=3, search_max_candidates=2)
    with TestClient(create_app(settings)) as c:
        assert error(c.post("/v1/search", json=body()))["details"][0]["field"] == "body.slots"
        err = error(c.post("/v1/search", json=body(slots=[block(0)])))
        assert err["details"][0]["field"] == "body.slots.0.candidates"


def test_body_over_the_limit_is_413_even_chunked(client):
    big = body(slots=[block(i) for i in range(1500)])
    assert error(client.post("/v1/search", json=big), 413)["code"] == "payload_too_large"
    chunks = iter([json.dumps(big).encode()[i : i + 4096] for i in range(0, len(json.dumps(big)), 4096)])
    r = client.post("/v1/search", content=chunks, headers={"content-type": "application/json"})
    assert error(r, 413)["code"] == "payload_too_large"


def test_sweep_gives_the_best_architecture_per_budget(client):
    payload = {
        "slots": [block(i) for i in range(4)],
        "cost": "latency_ms",
        "fractions": [0.125, 0.25, 0.5, 1.0],
        "gap": 0,
    }
    out = client.post("/v1/search/sweep", json=payload).json()
    points = out["points"]
    assert [p["max"] for p in points] == [1.0, 2.0, 4.0, 8.0]
    assert [p["status"] for p in points] == ["optimal"] * 4
    assert [p["solution"]["objective"] for p in points] == [1.7, 1.4, 0.8, 0.0]


def test_sweep_marks_infeasible_points_and_checks_its_input(client):
    slots = [block(i, identity=(0.5, 0)) for i in range(2)]
    out = client.post(
        "/v1/search/sweep", json={"slots": slots, "cost": "latency_ms", "values": [0.5, 1.0]}
    ).json()
    assert [p["status"] for p in out["points"]] == ["infeasible", "optimal"]
    assert out["points"][0]["solution"] is None
    err = error(client.post("/v1/search/sweep", json={"slots": slots, "cost": "latency_ms"}))
    assert err["details"][0]["field"] == "body"
    err = error(client.post("/v1/search/sweep", json={"slots": slots, "cost": "nope", "values": [1]}))
    assert err["details"][0]["field"] == "body.cost"


def test_typed_client_search_and_sweep(client):
    search = SearchClient(client)
    request = SearchRequest(slots=synthetic_slots(16, 6), budgets=synthetic_budgets(), k=3)
    response = search.search(request)
    assert response.status == "complete" and len(response.solutions) == 3
    assert all(s.optimal and s.gap <= 1e-3 for s in response.solutions)
    sweep = search.sweep(SweepRequest(slots=synthetic_slots(16, 6), cost="latency_ms", fractions=[0.3, 0.6]))
    assert sweep.points[0].solution.objective >= sweep.points[1].solution.objective
    with pytest.raises(ServiceError) as err:
        search.search(request.model_copy(update={"k": 5000}))
    assert err.value.status == 422


def test_a_long_solve_runs_off_the_event_loop():
    """/healthz answers while a search is still running, and the search stops at its time limit."""
    request = {
        "slots": [s.model_dump() for s in synthetic_slots(160, 30)],
        "budgets": [b.model_dump() for b in synthetic_budgets()],
        "k": 1000,
        "time_limit_s": 4,
    }
    result = {}
    with TestClient(create_app(Settings())) as client:
        worker = threading.Thread(target=lambda: result.update(r=client.post("/v1/search", json=request)))
        worker.start()
        time.sleep(0.5)
        assert client.get("/healthz").json()["status"] == "ok"
        assert worker.is_alive(), "the search finished before /healthz answered"
        worker.join()
    assert result["r"].status_code == 200
    out = result["r"].json()
    assert out["status"] == "time_limit" and 1 <= len(out["solutions"]) < 1000
