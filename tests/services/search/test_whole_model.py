"""Whole-model budgets over HTTP: the fixed part in budgets and reported costs, caps on peak costs,
derived costs (memory_bytes as the profiler's estimate computes it), the infeasible 422 and sweeps."""

import pytest
from fastapi.testclient import TestClient

from services.search.main import create_app
from shared.settings import Settings

# per candidate: (score, latency_ms, weight_bytes, activation_bytes)
BLOCK = {"teacher": (0.0, 2.0, 10, 100), "identity": (0.5, 0.0, 0, 0), "half": (0.2, 1.0, 5, 60)}


def block(i: int, candidates=BLOCK) -> dict:
    return {
        "id": f"block{i}.attn",
        "candidates": [
            {
                "id": cid,
                "score": score,
                "costs": {"latency_ms": latency, "weight_bytes": weight, "activation_bytes": activation},
                "reference": cid == "teacher",
            }
            for cid, (score, latency, weight, activation) in candidates.items()
        ],
    }


FIXED = {"latency_ms": 2.0, "weight_bytes": 20, "activation_bytes": 50}
MEMORY = {"memory_bytes": ["weight_bytes", "activation_bytes"]}


def body(budgets, **overrides) -> dict:
    return {
        "slots": [block(i) for i in range(4)],
        "budgets": budgets,
        "fixed": FIXED,
        "peak_costs": ["activation_bytes"],
        "derived_costs": MEMORY,
        "gap": 0,
    } | overrides


@pytest.fixture
def client():
    with TestClient(create_app(Settings())) as c:
        yield c


def first(client, payload) -> dict:
    r = client.post("/v1/search", json=payload)
    assert r.status_code == 200, r.text
    return r.json()["solutions"][0]


def test_a_fraction_budget_is_a_fraction_of_the_whole_model(client):
    # 0.5 x (4 teachers' 8 ms + 2 ms fixed) = 5 ms for the whole model: 3 ms for the slots, not 4
    solution = first(client, body([{"cost": "latency_ms", "fraction": 0.5}]))
    assert sorted(solution["choices"].values()) == ["half", "half", "half", "identity"]
    assert solution["objective"] == pytest.approx(1.1)
    assert solution["costs"]["latency_ms"] == 5.0 <= 0.5 * (4 * 2.0 + 2.0)
    without_fixed = body([{"cost": "latency_ms", "fraction": 0.5}], fixed={})
    assert first(client, without_fixed)["costs"]["latency_ms"] == 4.0  # 4 halves: 0.5 x 8 ms


def test_a_max_budget_and_the_reported_costs_are_whole_model_values(client):
    solution = first(client, body([{"cost": "latency_ms", "max": 5.0}]))
    assert solution["objective"] == pytest.approx(1.1)
    # summed costs with the fixed part, peak costs as the largest part, derived costs as their sum
    assert solution["costs"] == {
        "latency_ms": 5.0,
        "weight_bytes": 15 + 20,
        "activation_bytes": 60,
        "memory_bytes": 35 + 60,
    }


def test_a_budget_on_a_peak_cost_excludes_the_candidates_above_it(client):
    solution = first(client, body([{"cost": "activation_bytes", "max": 80}]))
    assert set(solution["choices"].values()) == {"half"}  # the teacher's 100 is over the cap
    assert solution["costs"]["activation_bytes"] == 60
    # as a fraction: 0.6 x the teacher's peak of 100 is 60
    solution = first(client, body([{"cost": "activation_bytes", "fraction": 0.6}]))
    assert set(solution["choices"].values()) == {"half"}


def test_a_fixed_part_above_a_peak_cap_is_infeasible(client):
    r = client.post("/v1/search", json=body([{"cost": "activation_bytes", "max": 40}]))
    err = r.json()["error"]
    assert r.status_code == 422 and err["code"] == "infeasible"
    assert err["details"] == [{"cost": "activation_bytes", "max": 40.0, "min_achievable": 50.0}]


def test_a_derived_budget_counts_its_peak_part_once(client):
    # 4 halves: weight 20 + 20 fixed, activation peak 60 -> 100; summing peaks would make it 280
    solution = first(client, body([{"cost": "memory_bytes", "max": 100}]))
    assert set(solution["choices"].values()) == {"half"}
    assert solution["costs"]["memory_bytes"] == 100
    # one teacher more: weight 45, peak 100 -> 145, over budget
    solution = first(client, body([{"cost": "memory_bytes", "max": 144}]))
    assert "teacher" not in solution["choices"].values()


def test_min_achievable_of_a_derived_cost_with_a_peak_is_its_true_minimum(client):
    # light weights peak high, light peaks weigh more: the least memory is not the least weight plus
    # the least peak (20 + 0), but all-"small" at 40 (weight 20 + 20 fixed, peak 0)
    candidates = {"teacher": (0.0, 2.0, 10, 100), "wide": (0.3, 1.0, 0, 100), "small": (0.4, 1.0, 5, 0)}
    payload = body(
        [{"cost": "memory_bytes", "max": 30}],
        slots=[block(i, candidates) for i in range(4)],
        fixed={"weight_bytes": 20, "activation_bytes": 0},
    )
    err = client.post("/v1/search", json=payload).json()["error"]
    assert err["code"] == "infeasible"
    assert err["details"] == [{"cost": "memory_bytes", "max": 30.0, "min_achievable": 40.0}]


def test_the_infeasible_minimum_of_a_summed_cost_includes_the_fixed_part(client):
    err = client.post("/v1/search", json=body([{"cost": "latency_ms", "max": 1.0}])).json()["error"]
    assert err["details"] == [{"cost": "latency_ms", "max": 1.0, "min_achievable": 2.0}]


def test_a_sweep_with_fixed_costs_sweeps_whole_model_budgets(client):
    payload = {
        "slots": [block(i) for i in range(4)],
        "fixed": FIXED,
        "cost": "latency_ms",
        "fractions": [0.2, 0.5, 1.0],
        "gap": 0,
    }
    out = client.post("/v1/search/sweep", json=payload).json()
    assert [p["max"] for p in out["points"]] == [2.0, 5.0, 10.0]  # fractions of 8 + 2
    assert [p["status"] for p in out["points"]] == ["optimal"] * 3
    assert [p["solution"]["costs"]["latency_ms"] for p in out["points"]] == [2.0, 5.0, 10.0]


def test_a_sweep_of_a_derived_cost_with_a_peak(client):
    payload = {
        "slots": [block(i) for i in range(4)],
        "fixed": FIXED,
        "peak_costs": ["activation_bytes"],
        "derived_costs": MEMORY,
        "cost": "memory_bytes",
        "values": [60, 100, 200],
        "gap": 0,
    }
    out = client.post("/v1/search/sweep", json=payload).json()
    assert [p["status"] for p in out["points"]] == ["infeasible", "optimal", "optimal"]
    assert out["points"][1]["solution"]["costs"]["memory_bytes"] == 100


BAD = {
    "fixed part of an unknown cost": (body([], fixed={"latency": 1.0}), "body.fixed.latency"),
    "negative fixed part": (body([], fixed={"latency_ms": -1.0}), "body.fixed.latency_ms"),
    "peak cost no candidate has": (body([], peak_costs=["memory"]), "body.peak_costs.0"),
    "peak cost twice": (
        body([], peak_costs=["activation_bytes", "activation_bytes"]),
        "body.peak_costs.1",
    ),
    "derived cost named as a candidate cost": (
        body([], derived_costs={"latency_ms": ["weight_bytes"]}),
        "body.derived_costs.latency_ms",
    ),
    "derived cost of an unknown cost": (
        body([], derived_costs={"memory_bytes": ["weight_bytes", "kv_cache_bytes"]}),
        "body.derived_costs.memory_bytes.1",
    ),
    "derived cost listing a cost twice": (
        body([], derived_costs={"memory_bytes": ["weight_bytes", "weight_bytes"]}),
        "body.derived_costs.memory_bytes.1",
    ),
    "derived cost of nothing": (
        body([], derived_costs={"memory_bytes": []}),
        "body.derived_costs.memory_bytes",
    ),
    "derived cost with two peak costs": (
        body([], peak_costs=["activation_bytes", "latency_ms"])
        | {"derived_costs": {"x": ["latency_ms", "activation_bytes"]}},
        "body.derived_costs.x",
    ),
    "budget on an unknown derived cost": (body([{"cost": "memory", "max": 1}]), "body.budgets.0.cost"),
    "fixed part of a derived cost": (body([], fixed={"memory_bytes": 1.0}), "body.fixed.memory_bytes"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_whole_model_input_is_422_naming_the_field(client, case):
    payload, field = BAD[case]
    r = client.post("/v1/search", json=payload)
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["error"]["details"]], r.text
