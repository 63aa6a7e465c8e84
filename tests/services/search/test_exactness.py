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

from services.search.ilp import search_cbc
from services.search.levels import search_model
from services.search.relaxation import Relaxation
from services.search.request import build_whole_model
from services.search.solver import prove, relax_and_repair
from services.search.synthetic import synthetic_budgets, synthetic_slots
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
