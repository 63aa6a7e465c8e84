"""K diverse architectures, each proven within the gap given those before it (paper Eq. 3 and 4).

Per solution:
1. The LP relaxation (warm, one row added per solution) gives row multipliers; from them a Lagrangian
   lower bound and every candidate's reduced cost (relaxation.py). With few side rows the LP is nearly
   integral: only about one slot per binding row is fractional.
2. Neighbourhood: a small MIP that keeps the LP's integral slots and lets only the fractional slots
   choose among their near-zero reduced-cost candidates, stopping at the first solution already within
   the gap of the bound. This usually settles a solution in milliseconds.
3. Otherwise the core: any architecture using a candidate whose reduced cost exceeds delta scores more
   than bound + delta, so a MIP over the candidates with reduced cost <= delta, with delta the
   incumbent's excess over the bound, holds every better architecture. Its bound (capped at
   bound + delta) is proven for the whole problem; delta grows until the gap is proven.
The bound of solution k is never below that of solution k-1 (its feasible set is a subset).
A request's time limit caps every step; what was found is kept with its proven bound.
"""

import time

import numpy as np

from services.search.core import solve_core
from services.search.outcome import Found, Outcome, within_gap
from services.search.problem import Problem
from services.search.relaxation import Relaxation, lagrangian
from services.search.repair import repair


def search_problem(problem: Problem, *, k: int, gap: float, time_limit_s: float) -> Outcome:
    deadline = time.monotonic() + time_limit_s
    relaxation = Relaxation(problem)
    outcome = Outcome("complete")
    floor = 0.0  # scores are >= 0
    while len(outcome.found) < k:
        status, found = next_solution(problem, relaxation, floor, gap=gap, deadline=deadline)
        if found is not None:
            outcome.found.append(found)
            floor = found.bound
            relaxation.add_overlap_row(found.choice)
        if status != "optimal" or found is None:
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
    tolerance = gap * abs(bound) + 1e-9 * max(1.0, abs(bound))
    best = None

    # First without a solver: round the LP and repair it; then MIP neighbourhoods, smallest first: the
    # LP's fractional slots only, then every candidate whose reduced cost is within the gap. Each stops
    # at its first architecture within the gap of the bound.
    near = problem.allowed & ((reduced <= tolerance) | (x > 1e-9))
    best = _better(problem, best, repair(problem, predecessors, x, near))
    if best is not None and within_gap(problem.objective(best), bound, gap):
        return "optimal", Found(best, problem.objective(best), bound, True)
    fractional = ((x > 1e-9) & (x < 1 - 1e-9)).any(axis=1)
    for neighbourhood, seconds in ((np.where(fractional[:, None], near, x > 0.5), 0.25), (near, None)):
        left = deadline - time.monotonic()
        left = left if seconds is None else min(seconds, left)
        result = solve_core(
            problem,
            predecessors,
            neighbourhood,
            gap=gap,
            time_limit_s=left,
            stop_at=bound + tolerance,
            start=best,
        )
        best = _better(problem, best, result.choice)
        if best is not None and within_gap(problem.objective(best), bound, gap):
            return "optimal", Found(best, problem.objective(best), bound, True)

    delta = tolerance if best is None else max(problem.objective(best) - bound, tolerance)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        core = problem.allowed & (reduced <= delta + 1e-12 * max(1.0, abs(bound)))
        whole = bool(np.array_equal(core, problem.allowed))
        result = solve_core(problem, predecessors, core, gap=gap, time_limit_s=left, start=best)
        if result.status == "infeasible":
            if whole:
                return (
                    ("infeasible", None) if best is None else ("optimal", _found(problem, best, bound, gap))
                )
            delta = max(8 * delta, 1e-6)
            continue
        core_bound = result.bound if whole else min(result.bound, bound + delta)
        bound = max(bound, core_bound)
        best = _better(problem, best, result.choice)
        if best is not None and (
            within_gap(problem.objective(best), bound, gap) or result.status != "optimal"
        ):
            break
        if best is None:  # a time limit without any solution
            return "time_limit", None
        if whole:
            break
        delta = max(problem.objective(best) - bound + delta, 2 * delta)
    if best is None:
        return "time_limit", None
    found = _found(problem, best, bound, gap)
    return ("optimal" if found.optimal else "time_limit"), found


def _found(problem: Problem, choice: np.ndarray, bound: float, gap: float) -> Found:
    objective = problem.objective(choice)
    bound = min(bound, objective)
    return Found(choice, objective, bound, within_gap(objective, bound, gap))


def _better(problem: Problem, best: np.ndarray | None, choice: np.ndarray | None) -> np.ndarray | None:
    if choice is None:
        return best
    if not problem.within_budgets(choice):
        raise RuntimeError("the MIP returned an architecture over budget")  # a solver tolerance bug
    if best is None or problem.objective(choice) < problem.objective(best):
        return choice
    return best
