"""K diverse architectures, each proven within the gap given those before it (paper Eq. 3 and 4).

Per solution:
1. The LP relaxation (HiGHS, kept warm, one row added per solution) gives row multipliers; from them a
   Lagrangian lower bound and every candidate's reduced cost (relaxation.py). With few side rows the
   LP is nearly integral: about one slot per binding row is fractional.
2. Round the LP and repair it into an architecture meeting every row (repair.py, no solver). Most
   first solutions end here: already within the gap of the bound.
3. Otherwise the core: an architecture using a candidate whose reduced cost exceeds delta scores more
   than L + delta (L the Lagrangian value), so the candidates with reduced cost <= delta hold every
   architecture scoring at most L + delta. First the smallest useful core: delta = the bound's gap
   allowance (about 3 candidates per slot of 30), holding every architecture within the gap. Its MIP
   (HiGHS, in this process) either finds one -- proven by L -- or proves there is none, which raises
   the bound to L + delta. If the best found is still not proven, a second core with delta = its excess
   over L holds every better architecture, so that MIP's bound holds for the whole problem.
The bound of solution k is never below that of solution k-1 (its feasible set is a subset); that floor
raises the reported bound only, never the L used for the cores.
Time: the MIPs of a solution may use up to twice its even share of the time left beyond a reserve for
the solutions still to come by steps 1-2 alone (twice the longest of their last five times: they slow
as rows are added). So a hard solution keeps its best architecture with its proven bound (optimal
false) instead of starving the rest; one with no architecture yet (the repair failed) takes the first
one HiGHS finds. The request's time limit caps everything; a `cancel` event set by the caller (a
client gone) stops the search between steps and interrupts a running MIP.
"""

import threading
import time
from dataclasses import dataclass

import numpy as np

from services.search.highs_model import solve_core
from services.search.outcome import Found, Outcome, within_gap
from services.search.problem import Problem
from services.search.relaxation import Relaxation, lagrangian
from services.search.repair import repair

CORE_MIN_S = 0.02  # below this a MIP cannot get through HiGHS's presolve and root LP


def search_problem(
    problem: Problem, *, k: int, gap: float, time_limit_s: float, cancel: threading.Event | None = None
) -> Outcome:
    deadline = time.monotonic() + time_limit_s
    relaxation = Relaxation(problem)
    outcome = Outcome("complete")
    floor = 0.0  # scores are >= 0
    quick: list[float] = []  # seconds of steps 1-2 per solution
    while len(outcome.found) < k:
        if stopped(cancel) == "cancelled":
            outcome.status = "cancelled"
            break
        started = time.monotonic()
        step = relax_and_repair(problem, relaxation, floor, gap=gap, deadline=deadline)
        if step.status != "optimal":
            outcome.status = "exhausted" if step.status == "infeasible" else stopped(cancel)
            break
        quick.append(time.monotonic() - started)
        found = step.found
        if found is None or not found.optimal:
            until = time_share(quick, k - len(outcome.found) - 1, deadline)
            found = prove(
                problem, relaxation.predecessors, step, gap=gap, until=until, deadline=deadline, cancel=cancel
            )
        if found is None:
            outcome.status = "exhausted" if step.exhausted else stopped(cancel)
            break
        outcome.found.append(found)
        floor = found.bound
        relaxation.add_overlap_row(found.choice)
    return outcome


def stopped(cancel: threading.Event | None) -> str:
    """Why a search stopped short of proving anything: its caller cancelled it, or time ran out."""
    return "cancelled" if cancel is not None and cancel.is_set() else "time_limit"


def time_share(quick: list[float], to_come: int, deadline: float) -> float:
    """Until when one solution's MIPs may run: twice its even share of the time left beyond a reserve
    for the solutions still to come by steps 1-2 alone."""
    spare = deadline - 2 * max(quick[-5:]) * to_come - time.monotonic()
    return time.monotonic() + spare * min(1.0, 2 / (to_come + 1))


@dataclass
class Step:
    status: str  # 'optimal' (the LP was solved), 'infeasible' or 'time_limit'
    bound: float = 0.0  # the best proven bound: the Lagrangian one, or the previous solution's
    lagrangian: float = 0.0  # score(z) >= lagrangian + sum of z's reduced costs, for every z
    reduced: np.ndarray | None = None
    found: Found | None = None  # the repaired rounding, with the LP's bound
    exhausted: bool = False  # set by prove(): no architecture is left


def relax_and_repair(
    problem: Problem, relaxation: Relaxation, floor: float, *, gap: float, deadline: float
) -> Step:
    """Steps 1 and 2: the bound and reduced costs, and an incumbent when the rounding can be repaired."""
    status, x, multipliers = relaxation.solve(deadline - time.monotonic())
    if status != "optimal":
        return Step(status)
    dual, reduced = lagrangian(
        problem, relaxation.predecessors, multipliers, relaxation.columns.objective_scale
    )
    bound = max(dual, floor)
    near = problem.allowed & ((reduced <= gap * abs(bound)) | (x > 1e-9))
    choice = _checked(problem, repair(problem, relaxation.predecessors, x, near, deadline=deadline))
    found = None if choice is None else _found(problem, choice, bound, gap)
    return Step("optimal", bound, dual, reduced, found)


def prove(
    problem: Problem,
    predecessors: list[np.ndarray],
    step: Step,
    *,
    gap: float,
    until: float,
    deadline: float,
    cancel: threading.Event | None = None,
) -> Found | None:
    """Step 3: the core MIPs, until `until`; the best architecture found with the best bound proven.
    Without any architecture by then, the first one found before the deadline."""
    best, bound = step.found, step.bound
    tiny = 1e-9 * max(1.0, abs(bound))  # float rounding of reduced costs must drop nothing
    # first the core of every architecture within the gap of the bound
    delta = step.bound - step.lagrangian + gap * abs(bound)
    for _ in range(2):
        if until - time.monotonic() < CORE_MIN_S:
            break
        core = problem.allowed & (step.reduced <= delta + tiny)
        everything = bool(np.array_equal(core, problem.allowed))
        result = solve_core(
            problem,
            predecessors,
            core,
            gap_abs=gap * abs(bound),
            time_limit_s=until - time.monotonic(),
            start=None if best is None else best.choice,
            cancel=cancel,
        )
        # outside the core every architecture scores above L + delta
        bound = max(bound, min(result.bound, np.inf if everything else step.lagrangian + delta))
        choice = _mended(problem, predecessors, result.choice, core, deadline)
        if choice is not None and (best is None or problem.objective(choice) < best.objective):
            best = _found(problem, choice, bound, gap)
        step.exhausted = result.status == "infeasible" and everything and best is None
        if everything or (best is not None and within_gap(best.objective, bound, gap)):
            break
        # then the core of every architecture better than the best found (or of all, without one)
        wider = np.inf if best is None else best.objective - step.lagrangian
        if wider <= delta:
            break
        delta = wider
    if best is None and not step.exhausted and stopped(cancel) != "cancelled":
        # no architecture yet: search them all, until the first one (a repair can fail, a MIP cannot)
        result = solve_core(
            problem,
            predecessors,
            problem.allowed,
            gap_abs=gap * abs(bound),
            time_limit_s=deadline - time.monotonic(),
            first_only=True,
            cancel=cancel,
        )
        bound = max(bound, result.bound)
        choice = _mended(problem, predecessors, result.choice, problem.allowed, deadline)
        if choice is not None:  # a first find can be poor: improve it by moves that keep every row
            one_hot = (np.arange(problem.allowed.shape[1]) == choice[:, None]).astype(float)
            polished = repair(problem, predecessors, one_hot, problem.allowed, deadline=deadline)
            choice = choice if polished is None else _checked(problem, polished)
        best = None if choice is None else _found(problem, choice, bound, gap)
        step.exhausted = result.status == "infeasible"
    return None if best is None else _found(problem, best.choice, bound, gap)


def _found(problem: Problem, choice: np.ndarray, bound: float, gap: float) -> Found:
    objective = problem.objective(choice)
    bound = min(bound, objective)
    return Found(choice, objective, bound, within_gap(objective, bound, gap))


def _mended(
    problem: Problem,
    predecessors: list[np.ndarray],
    choice: np.ndarray | None,
    mask: np.ndarray,
    deadline: float,
) -> np.ndarray | None:
    """A MIP's architecture, moved back within every row if it crossed one: HiGHS ignores matrix entries
    below its small_matrix_value (1e-9 of a row scaled to its limit), so many tiny costs can add up past
    a budget unseen. Its bound stays valid (dropping costs only loosens a row). None if no repair."""
    if choice is None or (problem.within_budgets(choice) and problem.overlaps_hold(choice, predecessors)):
        return choice
    one_hot = (np.arange(problem.allowed.shape[1]) == choice[:, None]).astype(float)
    return _checked(problem, repair(problem, predecessors, one_hot, mask, deadline=deadline))


def _checked(problem: Problem, choice: np.ndarray | None) -> np.ndarray | None:
    if choice is not None and not problem.within_budgets(choice):
        raise RuntimeError("a solver returned an architecture over budget")  # a tolerance bug, never silent
    return choice
