"""Every solver against brute-force enumeration on small random instances (paper Eq. 3 and 4).

With gap 0, solution 1 is the true optimum and each solution k is optimal given the solutions before
it; with a gap, each is within it. Budgets and overlaps hold, no two solutions are equal, every bound
is a real lower bound, and the same request gives the same answer.
"""

import itertools
import time
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.search import levels
from services.search.ilp import search_cbc
from services.search.levels import search_model
from services.search.relaxation import Relaxation
from services.search.request import build_whole_model
from services.search.solver import prove, relax_and_repair
from services.search.synthetic import synthetic_budgets, synthetic_fixed, synthetic_memory, synthetic_slots
from shared.schemas.search import Budget, Candidate, Slot
from shared.settings import Settings


def search_by_mips(model, **kwargs):
    """The fast solver with its repair step failing, so that every solution comes from its MIPs."""
    with mock.patch("services.search.solver.repair", return_value=None):
        return search_model(model, **kwargs)


SOLVERS = {"fast": search_model, "mips": search_by_mips, "cbc": search_cbc}
TOL = 1e-9


@st.composite
def requests(draw):
    num_slots = draw(st.integers(1, 5))
    cost_names = ["latency_ms", "params"][: draw(st.integers(1, 2))]
    slots = []
    for i in range(num_slots):
        n = draw(st.integers(1, 4))
        candidates = [
            Candidate(
                id=f"c{j}",
                score=draw(st.integers(0, 40)) / 4,  # quarters: exact sums, and ties happen
                costs={name: float(draw(st.integers(0, 10))) for name in cost_names},
            )
            for j in range(n)
        ]
        ids = [c.id for c in candidates]
        pin = draw(st.sampled_from([None, None, None, *ids]))
        exclude = [] if pin or n == 1 else draw(st.lists(st.sampled_from(ids), max_size=n - 1, unique=True))
        slots.append(Slot(id=f"s{i}", candidates=candidates, pin=pin, exclude=exclude))
    budgets = [
        Budget(cost=name, max=float(draw(st.integers(0, 8 * num_slots))))
        for name in cost_names
        if draw(st.booleans())
    ]
    return {
        "slots": slots,
        "budgets": budgets,
        "max_overlap": draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0])),
        "k": draw(st.integers(1, 6)),
        "gap": draw(st.sampled_from([0.0, 0.0, 0.05, 0.2])),
    }


def architectures(problem):
    """Every architecture meeting the budgets, with its objective."""
    options = [np.flatnonzero(problem.allowed[i]) for i in range(problem.num_slots)]
    feasible = []
    for choice in itertools.product(*options):
        choice = np.array(choice)
        if problem.within_budgets(choice):
            feasible.append((problem.objective(choice), choice))
    return feasible


@pytest.mark.parametrize("solver", SOLVERS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests())
def test_solutions_match_brute_force(solver, request):
    problem = build_whole_model(
        request["slots"], request["budgets"], max_overlap=request["max_overlap"], settings=Settings()
    )
    gap = request["gap"]
    outcome = SOLVERS[solver](problem, k=request["k"], gap=gap, time_limit_s=60)
    remaining = architectures(problem)
    for found in outcome.found:
        assert remaining, "a solution was returned where none exists"
        best = min(objective for objective, _ in remaining)
        assert problem.within_budgets(found.choice)
        assert any(np.array_equal(found.choice, choice) for _, choice in remaining), (
            "overlap or budget broken"
        )
        assert found.objective == pytest.approx(problem.objective(found.choice), abs=TOL)
        assert found.bound <= best + TOL, "the bound is not a lower bound"
        assert found.optimal, "small instances must be proven within the gap"
        assert found.objective - best <= gap * found.objective + TOL
        assert found.objective - found.bound <= gap * found.objective + TOL
        # Eq. 4: later solutions share at most O slot choices with this one
        remaining = [(o, c) for o, c in remaining if np.sum(c == found.choice) <= problem.max_overlap]
    chosen = [tuple(f.choice) for f in outcome.found]
    assert len(set(chosen)) == len(chosen), "two solutions are equal"
    if outcome.status == "complete":
        assert len(outcome.found) == request["k"]
    else:
        assert outcome.status == "exhausted" and len(outcome.found) < request["k"]
        assert not remaining, "exhausted, yet another diverse architecture exists"


@pytest.mark.parametrize("solver", SOLVERS)
@settings(max_examples=15, deadline=None)
@given(request=requests())
def test_same_request_same_answer(solver, request):
    problem = build_whole_model(
        request["slots"], request["budgets"], max_overlap=request["max_overlap"], settings=Settings()
    )
    runs = [SOLVERS[solver](problem, k=request["k"], gap=request["gap"], time_limit_s=60) for _ in range(2)]
    assert [tuple(f.choice) for f in runs[0].found] == [tuple(f.choice) for f in runs[1].found]
    assert runs[0].status == runs[1].status


def test_fast_solver_matches_cbc_beyond_brute_force_size():
    """A synthetic 24 x 8 instance (8^24 architectures): both exact solvers agree on the optimum."""
    problem = build_whole_model(
        synthetic_slots(24, 8), synthetic_budgets(), max_overlap=0.7, settings=Settings()
    )
    fast = search_model(problem, k=3, gap=0.0, time_limit_s=60)
    cbc = search_cbc(problem, k=1, gap=0.0, time_limit_s=60)
    assert fast.status == "complete" and all(f.optimal for f in fast.found)
    assert fast.found[0].objective == pytest.approx(cbc.found[0].objective, rel=1e-9)
    assert [f.objective for f in fast.found] == sorted(f.objective for f in fast.found)


def test_out_of_time_share_still_returns_an_architecture():
    """With its time share spent and no incumbent, a solution is the first architecture the MIP finds."""
    model = build_whole_model(
        synthetic_slots(24, 8), synthetic_budgets(), max_overlap=0.5, settings=Settings()
    )
    problem = model.problem()
    relaxation = Relaxation(problem)
    first = search_model(model, k=1, gap=0.0, time_limit_s=60).found[0]
    relaxation.add_overlap_row(first.choice)
    step = relax_and_repair(problem, relaxation, first.bound, gap=1e-3, deadline=time.monotonic() + 60)
    step.found = None  # as when the repair fails
    found = prove(problem, relaxation.predecessors, step, gap=1e-3, until=0.0, deadline=time.monotonic() + 60)
    assert problem.within_budgets(found.choice)
    assert problem.overlaps_hold(found.choice, [first.choice])
    assert first.bound <= found.bound <= found.objective


# Whole-model budgets: fixed parts, a peak cost, a derived cost, max and fraction budgets.
COSTS = ["latency_ms", "weight_bytes", "kv_bytes", "act_bytes"]


@st.composite
def whole_model_requests(draw):
    num_slots = draw(st.integers(1, 4))
    slots = []
    for i in range(num_slots):
        n = draw(st.integers(2, 4))  # slots of one candidate: the other strategy and pins
        candidates = []
        for j in range(n):
            costs = {name: float(draw(st.integers(0, 10))) for name in COSTS}
            # like operator sizes: the reference (teacher) peaks highest and scores best, the others
            # spread over lower levels and score worse
            costs["act_bytes"] = float(3 * (n - 1 - j) + draw(st.integers(0, 3)))
            score = (10 * j + draw(st.integers(0, 20))) / 4
            candidates.append(Candidate(id=f"c{j}", score=score, costs=costs, reference=j == 0))
        ids = [c.id for c in candidates]
        pin = draw(st.sampled_from([None] * 6 + ids))
        exclude = [] if pin or n == 1 else draw(st.lists(st.sampled_from(ids), max_size=n - 1, unique=True))
        slots.append(Slot(id=f"s{i}", candidates=candidates, pin=pin, exclude=exclude))
    # a fixed peak part below most candidates', so that architectures peak at different levels
    fixed = {
        name: float(draw(st.integers(0, 3 if name == "act_bytes" else 12)))
        for name in COSTS
        if draw(st.booleans())
    }
    # mostly the case that needs the search over peak levels: a budget on a derived cost with a peak part
    peak_costs = ["act_bytes"] if draw(st.integers(0, 3)) else []
    parts = draw(st.lists(st.sampled_from(COSTS[1:3]), max_size=2, unique=True))
    if draw(st.integers(0, 3)) or not parts:
        parts.append("act_bytes")
    derived = {"memory_bytes": parts}
    budgets = []
    # budgeted: the derived cost 3 times in 4, latency 1 in 2, the peak cost (a cap) 1 in 4
    for name, chance in [("memory_bytes", 3), ("latency_ms", 2), ("act_bytes", 1)]:  # in 4
        if draw(st.integers(0, 3)) >= chance:
            continue
        if draw(st.booleans()):  # eighths: exact in binary, as are the sums they multiply
            budgets.append(Budget(cost=name, fraction=draw(st.integers(2, 8)) / 8))
        else:
            budgets.append(Budget(cost=name, max=float(draw(st.integers(0, 12 * num_slots + 24)))))
    return {
        "slots": slots,
        "budgets": budgets,
        "fixed": fixed,
        "peak_costs": peak_costs,
        "derived_costs": derived,
        "max_overlap": draw(st.sampled_from([0.0, 0.5, 0.7, 1.0])),
        "k": draw(st.integers(1, 4)),
        "gap": draw(st.sampled_from([0.0, 0.0, 0.05])),
    }


def whole_value(request, chosen, name):
    """A cost of an architecture (its chosen Candidates), as the contract defines it."""
    if name in request["derived_costs"]:
        return sum(whole_value(request, chosen, part) for part in request["derived_costs"][name])
    fixed = request["fixed"].get(name, 0.0)
    values = [c.costs[name] for c in chosen]
    return max([fixed, *values]) if name in request["peak_costs"] else sum(values) + fixed


def whole_architectures(request):
    """Every architecture (pins and exclusions kept) as (candidate indices, chosen Candidates)."""
    options = [
        [j for j, c in enumerate(s.candidates) if c.id not in s.exclude and s.pin in (None, c.id)]
        for s in request["slots"]
    ]
    for choice in itertools.product(*options):
        yield np.array(choice), [s.candidates[j] for s, j in zip(request["slots"], choice, strict=True)]


def whole_limits(request):
    reference = [s.candidates[0] for s in request["slots"]]
    return {
        b.cost: b.max if b.max is not None else b.fraction * whole_value(request, reference, b.cost)
        for b in request["budgets"]
    }


def build(request):
    return build_whole_model(
        request["slots"],
        request["budgets"],
        fixed=request["fixed"],
        peak_costs=request["peak_costs"],
        derived_costs=request["derived_costs"],
        max_overlap=request["max_overlap"],
        settings=Settings(),
    )


@pytest.mark.parametrize("solver", SOLVERS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=whole_model_requests())
def test_whole_model_budgets_match_brute_force(solver, request):
    """Fixed parts, peak caps and derived costs with a peak part: every solver against enumeration of the
    contract's own definitions (not the service's code)."""
    model = build(request)
    limits = whole_limits(request)
    assert model.budgets == pytest.approx(limits, rel=1e-12)
    costs = [*COSTS, "memory_bytes"]
    every = [
        (choice, [whole_value(request, chosen, n) for n in costs])
        for choice, chosen in whole_architectures(request)
    ]
    for choice, values in every:  # reported costs are whole-model costs
        assert model.costs_of(choice) == pytest.approx(dict(zip(costs, values, strict=True)), abs=TOL)
    for name in limits:  # min_achievable of the infeasible 422: each cost on its own
        assert model.minimum(name) == pytest.approx(min(v[costs.index(name)] for _, v in every), abs=TOL)
    meets = [
        (model.objective(choice), choice)
        for choice, values in every
        if all(values[costs.index(n)] <= limit + TOL for n, limit in limits.items())
    ]
    outcome = SOLVERS[solver](model, k=request["k"], gap=request["gap"], time_limit_s=60)
    remaining = meets
    for found in outcome.found:
        assert remaining, "a solution was returned where none exists"
        best = min(objective for objective, _ in remaining)
        assert any(np.array_equal(found.choice, c) for _, c in remaining), "over budget or overlap broken"
        assert found.bound <= best + TOL, "the bound is not a lower bound"
        assert found.optimal and found.objective - best <= request["gap"] * found.objective + TOL
        remaining = [(o, c) for o, c in remaining if np.sum(c == found.choice) <= model.max_overlap]
    if outcome.status == "complete":
        assert len(outcome.found) == request["k"]
    else:
        assert outcome.status == "exhausted" and not remaining


def test_fast_solver_matches_cbc_on_a_memory_budget_beyond_brute_force_size():
    """A synthetic 24 x 8 instance with fixed costs and a whole-model memory budget (peak activations)."""
    memory = synthetic_memory(0.45)
    model = build_whole_model(
        synthetic_slots(24, 8, memory=True),
        synthetic_budgets() + memory["budgets"],
        fixed=synthetic_fixed(24),
        peak_costs=memory["peak_costs"],
        derived_costs=memory["derived_costs"],
        max_overlap=0.7,
        settings=Settings(),
    )
    fast = search_model(model, k=3, gap=0.0, time_limit_s=60)
    cbc = search_cbc(model, k=3, gap=0.0, time_limit_s=60)
    assert fast.status == cbc.status == "complete" and all(f.optimal for f in fast.found)
    assert [f.objective for f in fast.found] == pytest.approx([f.objective for f in cbc.found], rel=1e-9)
    for found in fast.found:
        assert model.within_budgets(found.choice)


def binding_memory_request(seed: int) -> dict:
    """A small instance whose memory budget (with a peak part) binds: between the least memory any
    architecture needs and the memory of the best architecture without that budget."""
    rng = np.random.default_rng(seed)
    num_slots, width = int(rng.integers(3, 6)), int(rng.integers(3, 5))
    slots = []
    for i in range(num_slots):
        candidates = []
        for j in range(width):
            costs = {name: float(rng.integers(0, 11)) for name in COSTS}
            costs["act_bytes"] = float(3 * (width - 1 - j) + rng.integers(0, 4))
            score = (10 * j + int(rng.integers(0, 21))) / 4
            candidates.append(Candidate(id=f"c{j}", score=score, costs=costs, reference=j == 0))
        slots.append(Slot(id=f"s{i}", candidates=candidates))
    request = {
        "slots": slots,
        "budgets": [],
        "fixed": {"weight_bytes": 4.0, "act_bytes": float(rng.integers(0, 4))},
        "peak_costs": ["act_bytes"],
        "derived_costs": {"memory_bytes": ["weight_bytes", "kv_bytes", "act_bytes"]},
        "max_overlap": 0.5,
        "k": 3,
        "gap": 0.0,
    }
    memory = sorted(
        whole_value(request, chosen, "memory_bytes") for _, chosen in whole_architectures(request)
    )
    best = min(whole_architectures(request), key=lambda a: sum(c.score for c in a[1]))
    unbound = whole_value(request, best[1], "memory_bytes")
    limit = memory[0] + float(rng.uniform(0.3, 1.0)) * (unbound - memory[0])
    return request | {"budgets": [Budget(cost="memory_bytes", max=float(np.floor(limit)))]}


@pytest.mark.parametrize("solver", ["fast", "mips"])
def test_binding_memory_budgets_split_level_ranges_and_stay_exact(solver, monkeypatch):
    """Where the best architecture of a range of peak levels is over budget, the range is split: the
    solutions still match brute force (and some instances do split)."""
    splits = []
    split = levels._split

    def counted(*args):
        parts = split(*args)
        splits.append(parts is not None)
        return parts

    monkeypatch.setattr(levels, "_split", counted)
    for seed in range(20):
        request = binding_memory_request(seed)
        model = build(request)
        limit = model.budgets["memory_bytes"]
        meets = [
            (model.objective(choice), choice)
            for choice, chosen in whole_architectures(request)
            if whole_value(request, chosen, "memory_bytes") <= limit
        ]
        outcome = SOLVERS[solver](model, k=3, gap=0.0, time_limit_s=60)
        for found in outcome.found:
            best = min(objective for objective, _ in meets)
            assert any(np.array_equal(found.choice, c) for _, c in meets), f"seed {seed}: over budget"
            assert found.objective == pytest.approx(best, abs=TOL) and found.bound <= best + TOL, seed
            meets = [(o, c) for o, c in meets if np.sum(c == found.choice) <= model.max_overlap]
        assert outcome.status == "complete" or (outcome.status == "exhausted" and not meets), seed
    assert any(splits), "no instance needed a split: the test no longer exercises it"
