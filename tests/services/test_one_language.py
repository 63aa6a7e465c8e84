"""The services mean the same things: a LUT's cost table joined with a score table is a search request
whose budgets are whole-model budgets and whose reported costs are exactly the profiler's estimate of
each solution, passed to it unchanged; a memory budget means what the estimate means."""

import pytest
from fastapi.testclient import TestClient

from services.profiler import store
from services.profiler.costs import computed_activation_bytes, fixed_costs, flops, static_costs
from services.profiler.main import MIGRATIONS, VERSION_TABLE
from services.profiler.main import create_app as profiler_app
from services.profiler.profiling import LutMeasurement, measured_operators
from services.search.main import create_app as search_app
from shared.clients.base import ServiceError
from shared.clients.profiler import ProfilerClient
from shared.clients.search import SearchClient
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.schemas.lut import Build, EstimateRequest, LutEntry, Measured, Stats
from shared.schemas.operators import Architecture, spec_hash, spec_name
from shared.schemas.scores import ScoredCandidate, ScoredSlot, ScoreTable
from shared.schemas.search import Budget
from shared.search_input import search_request
from shared.settings import Settings
from tests.services.profiler.test_store import DEVICE

KEY = Build(shape="tiny", length=64)


def measurement() -> LutMeasurement:
    """Latencies in proportion to FLOPs (plus a call's overhead): varied, as a device's are."""

    def stats(ms: float) -> Stats:
        return Stats(median_ms=ms, p10_ms=ms, p90_ms=ms, runs=8 if ms else 0, cv=0.0)

    entries = []
    for spec in measured_operators(KEY):
        ms = 0.0 if spec.kind == "identity" else 0.01 + flops(spec, KEY) / 2e9
        costs = static_costs(spec, KEY, latency_ms=ms, activation_bytes=computed_activation_bytes(spec, KEY))
        entries.append(
            LutEntry(
                operator=spec, name=spec_name(spec), hash=spec_hash(spec), latency=stats(ms), costs=costs
            )
        )
    fixed_ms = 0.01 + flops(None, KEY) / 2e9
    fixed = fixed_costs(KEY, latency_ms=fixed_ms, activation_bytes=computed_activation_bytes(None, KEY))
    return LutMeasurement(
        fixed=Measured(latency=stats(fixed_ms), costs=fixed),
        entries=entries,
        activation_method="computed",
        clock="thread_time",
        build_seconds=1.0,
        drift=0.0,
        stable=True,
    )


@pytest.fixture
def services(settings):
    engine = make_engine(settings.database_url)
    upgrade(engine, MIGRATIONS, VERSION_TABLE)
    with make_sessionmaker(engine).begin() as session:
        device_id = store.upsert_device(session, info=DEVICE)
        lut_id = store.save_lut(session, device_id=device_id, key=KEY, measurement=measurement())
    engine.dispose()
    with TestClient(profiler_app(settings)) as p, TestClient(search_app(Settings())) as s:
        yield ProfilerClient(p), SearchClient(s), device_id, lut_id


def scores_for(costs) -> ScoreTable:
    """Scores that prefer big operators (as real ones do), with the teacher's at 0."""
    slots = []
    for slot in costs.slots:
        biggest = max(c.costs["params"] for c in slot.candidates)
        slots.append(
            ScoredSlot(
                id=slot.id,
                candidates=[
                    ScoredCandidate(
                        id=c.id,
                        operator=c.operator,
                        score=0.0 if c.reference else 0.01 + 0.5 * (1 - c.costs["params"] / biggest),
                        stderr=0.001,
                        reference=c.reference,
                    )
                    for c in slot.candidates
                ],
            )
        )
    return ScoreTable(teacher_loss=3.0, tokens=1024, batches=8, rank_stability=1.0, slots=slots)


def test_half_the_teachers_latency_means_the_whole_model_and_costs_are_the_estimates(services):
    profiler, search, device_id, lut_id = services
    costs = profiler.export(lut_id)
    teacher = profiler.estimate(
        device_id, EstimateRequest(lut_id=lut_id, architecture=Architecture.teacher(KEY.shape))
    )
    request = search_request(scores_for(costs), costs, budgets=[Budget(cost="latency_ms", fraction=0.5)], k=3)
    solutions = search.search(request).solutions
    assert len(solutions) == 3
    assert solutions[0].costs["latency_ms"] <= 0.5 * teacher.latency_ms
    for solution in solutions:  # passed to the estimate unchanged, as the search returned it
        body = {"lut_id": lut_id, "architecture": solution.model_dump(mode="json")}
        estimate = profiler.request("POST", f"/v1/devices/{device_id}/estimate", json=body)
        for cost in (
            "latency_ms",
            "params",
            "weight_bytes",
            "kv_cache_bytes",
            "activation_bytes",
            "memory_bytes",
        ):
            assert solution.costs[cost] == estimate[cost], cost
    # the fixed part counts: the slots alone would have allowed more
    slots_only = solutions[0].costs["latency_ms"] - costs.fixed["latency_ms"]
    assert slots_only <= 0.5 * teacher.latency_ms - costs.fixed["latency_ms"] * 0.5


def test_a_memory_budget_means_what_the_estimate_means(services):
    profiler, search, device_id, lut_id = services
    costs = profiler.export(lut_id)
    scores = scores_for(costs)
    teacher = profiler.estimate(
        device_id, EstimateRequest(lut_id=lut_id, architecture=Architecture.teacher(KEY.shape))
    )
    # a cap on peak activations excludes every candidate above it (here: the biggest MLPs)
    activations = sorted({c.costs["activation_bytes"] for s in costs.slots for c in s.candidates})
    cap = max(costs.fixed["activation_bytes"], activations[-3])
    capped = search.search(
        search_request(scores, costs, budgets=[Budget(cost="activation_bytes", max=cap)], k=2)
    )
    by_id = {(s.id, c.id): c.costs for s in costs.slots for c in s.candidates}
    for solution in capped.solutions:
        assert all(by_id[(slot, cid)]["activation_bytes"] <= cap for slot, cid in solution.choices.items())
        assert solution.costs["activation_bytes"] == max(cap, costs.fixed["activation_bytes"]) or (
            solution.costs["activation_bytes"] < cap
        )
    # memory_bytes = weights + KV cache + peak activation, exactly the estimate's, within the budget
    budget = Budget(cost="memory_bytes", fraction=0.6)
    found = search.search(search_request(scores, costs, budgets=[budget], k=2)).solutions
    for solution in found:
        estimate = profiler.estimate(device_id, EstimateRequest(lut_id=lut_id, architecture=solution))
        assert solution.costs["memory_bytes"] == estimate.memory_bytes <= 0.6 * teacher.memory_bytes
    # too little memory for any architecture: the search says what the least reachable is
    with pytest.raises(ServiceError) as err:
        search.search(search_request(scores, costs, budgets=[Budget(cost="memory_bytes", max=1000)]))
    (least,) = err.value.details
    assert (
        err.value.code == "infeasible" and least["cost"] == "memory_bytes" and least["min_achievable"] > 1000
    )
