"""K diverse architectures, each proven within the gap given those before it (paper Eq. 3 and 4).

Per solution:
1. The LP relaxation (HiGHS, kept warm, one row added per solution) gives row multipliers; from them a
   Lagrangian lower bound and every candidate's reduced cost (relaxation.py). With few side rows the
   LP is nearly integral: about one slot per binding row is fractional.
2. Round the LP and repair it into an architecture meeting every row (repair.py, no solver). Most
   first solutions end here: already within the gap of the bound.
3. Otherwise the core: an architecture using a candidate whose reduced cost exceeds delta scores more
   than bound + delta, so with delta = incumbent - bound, the candidates with reduced cost <= delta hold
   every better architecture. That MIP (PuLP, CBC), warm-started from the incumbent and a few times
   smaller than the whole model, is solved to the gap; its proof holds for the whole problem.
The bound of solution k is never below that of solution k-1 (its feasible set is a subset).
Each solution gets a share of the time left; one that runs out of it keeps its best architecture with
its proven bound (optimal false) and the search goes on. The request's time limit caps everything.
"""

import time

import numpy as np

from services.search.ilp import solve_core
from services.search.outcome import Found, Outcome, within_gap
from services.search.problem import Problem
from services.search.relaxation import Relaxation, lagrangian
from services.search.repair import repair

MIN_SHARE_S = 0.2  # the least time one solution may take while the request's time lasts
CORE_MIN_S = 0.5  # below this, starting CBC (a process, a model file, root cuts) is not worth it


def search_problem(problem: Problem, *, k: int, gap: float, time_limit_s: float) -> Outcome:
    started = time.monotonic()
    deadline = started + time_limit_s
    relaxation = Relaxation(problem)
    outcome = Outcome("complete")
    floor = 0.0  # scores are >= 0
    while len(outcome.found) < k:
        now = time.monotonic()
        if now >= deadline:
            outcome.status = "time_limit"
            break
        # A fair share of the time left (early solutions are quick and leave more to later ones): one
        # hard solution keeps its best architecture and proven bound rather than starving the rest.
        cap = max(MIN_SHARE_S, (deadline - now) / (k - len(outcome.found)))
        status, found = next_solution(problem, relaxation, floor, gap=gap, deadline=min(deadline, now + cap))
        if found is None and status == "time_limit":  # no architecture yet: take all the time left
            status, found = next_solution(problem, relaxation, floor, gap=gap, deadline=deadline)
        if found is not None:
            outcome.found.append(found)
            floor = found.bound
            relaxation.add_overlap_row(found.choice)
        else:
            outcome.status = "exhausted" if status == "infeasible" else "time_limit"
            break
    return outcome


def next_solution(
    problem: Problem, relaxation: Relaxation, floor: float, *, gap: float, deadline: float
) -> tuple[str, Found | None]:
    """('optimal', found) | ('time_limit', found or None) | ('infeasible', None)."""
    predecessors = relaxation.predecessors
    status, x, multipliers = relaxation.solve(deadline - time.monotonic())
    if status != "optimal":
        return status, None
    bound, reduced = lagrangian(problem, predecessors, multipliers)
    bound = max(bound, floor)
    tolerance = gap * abs(bound)

    near = problem.allowed & ((reduced <= tolerance) | (x > 1e-9))
    best = _checked(problem, repair(problem, predecessors, x, near))
    if best is not None and within_gap(problem.objective(best), bound, gap):
        return "optimal", Found(best, problem.objective(best), bound, True)

    if best is not None and deadline - time.monotonic() < CORE_MIN_S:  # no time for a MIP: keep the incumbent
        found = Found(best, problem.objective(best), min(bound, problem.objective(best)), False)
        return "time_limit", found
    if best is None:
        core = problem.allowed
    else:  # a little slack so that float rounding never drops a candidate on the edge
        delta = problem.objective(best) - bound
        core = problem.allowed & (reduced <= delta + 1e-9 * max(1.0, abs(bound)))
    result = solve_core(
        problem, predecessors, core, gap_abs=tolerance, time_limit_s=deadline - time.monotonic(), start=best
    )
    if result.status == "infeasible" and best is None:
        return "infeasible", None
    if result.choice is not None:
        choice = _checked(problem, result.choice)
        if best is None or problem.objective(choice) < problem.objective(best):
            best = choice
    if best is None:
        return "time_limit", None
    objective = problem.objective(best)
    bound = min(max(bound, result.bound), objective)
    found = Found(best, objective, bound, within_gap(objective, bound, gap))
    return ("optimal" if found.optimal else "time_limit"), found


def _checked(problem: Problem, choice: np.ndarray | None) -> np.ndarray | None:
    if choice is not None and not problem.within_budgets(choice):
        raise RuntimeError("a solver returned an architecture over budget")  # a tolerance bug, never silent
    return choice
