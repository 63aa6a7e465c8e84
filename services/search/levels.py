"""K architectures under whole-model budgets: the one slot problem, or -- when a budget on a derived cost
has a peak part -- the exact search over peak levels.

At a peak level t the slot problem excludes candidates above t and leaves limit - t to the summed parts
(whole_model.py). An architecture meeting the budgets lies in the level of its own peak, and every
architecture of a level meets them, so the levels' problems together hold exactly the architectures
meeting the budgets. Solution k is then the best over all levels, each carrying the overlap rows of the
solutions before it, and its proven bound is the least of the levels' bounds. Levels are visited by
increasing bound, and one whose bound is already within the gap of the best found is not solved. A level
keeps its relaxation warm across solutions, and its best architecture while that meets the new overlap
rows (the rows only remove architectures, so none better can appear).
"""

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from services.search.outcome import Found, Outcome, within_gap
from services.search.problem import Problem
from services.search.relaxation import Relaxation
from services.search.solver import prove, relax_and_repair, search_problem, stopped, time_share
from services.search.whole_model import WholeModel


def search_model(
    model: WholeModel, *, k: int, gap: float, time_limit_s: float, cancel: threading.Event | None = None
) -> Outcome:
    if not model.level_costs():
        problem = model.problem()
        if problem is None:
            return Outcome("exhausted")
        return search_problem(problem, k=k, gap=gap, time_limit_s=time_limit_s, cancel=cancel)
    return search_levels(model, k=k, gap=gap, time_limit_s=time_limit_s, cancel=cancel)


@dataclass
class Level:
    problem: Problem
    bound: float  # proven lower bound on its architectures that meet the overlap rows so far
    relaxation: Relaxation | None = None  # built at its first solve, then kept warm
    found: Found | None = None  # its best architecture known, while that meets every overlap row
    empty: bool = False  # proven to hold no architecture meeting the overlap rows


def search_levels(
    model: WholeModel, *, k: int, gap: float, time_limit_s: float, cancel: threading.Event | None = None
) -> Outcome:
    deadline = time.monotonic() + time_limit_s
    levels = []
    for peaks in model.levels():
        problem = model.problem(peaks)
        if problem is not None:
            # scores are >= 0 and each slot takes one candidate: the least score per slot is a bound
            least = math.fsum(np.where(problem.allowed, problem.scores, np.inf).min(axis=1))
            levels.append(Level(problem, least))
    outcome = Outcome("complete")
    predecessors: list[np.ndarray] = []
    quick: list[float] = []  # seconds of steps 1-2 per solution, all levels together
    while len(outcome.found) < k and outcome.status == "complete":
        # the MIPs of this solution, over all levels, share one time share
        until = time_share(quick or [0.0], k - len(outcome.found) - 1, deadline)
        quick.append(0.0)
        best = None
        for level in sorted((x for x in levels if not x.empty), key=lambda x: x.bound):
            if best is not None and within_gap(best.objective, level.bound, gap):
                continue  # nothing in this level is better by more than the gap
            if time.monotonic() >= deadline or stopped(cancel) == "cancelled":
                outcome.status = stopped(cancel)
                break
            if level.found is None:
                quick[-1] += solve(
                    level, predecessors, gap=gap, until=until, deadline=deadline, cancel=cancel
                )
            if level.found is not None and (best is None or level.found.objective < best.objective):
                best = level.found
        if best is None:
            if all(level.empty for level in levels):
                outcome.status = "exhausted"
            elif outcome.status == "complete":
                outcome.status = stopped(cancel)
            break
        bound = min(min(level.bound for level in levels if not level.empty), best.objective)
        outcome.found.append(
            Found(best.choice, best.objective, bound, within_gap(best.objective, bound, gap))
        )
        predecessors.append(best.choice)
        for level in levels:
            if level.found is not None and not level.problem.overlaps_hold(level.found.choice, [best.choice]):
                level.found = None
    return outcome


def solve(
    level: Level,
    predecessors: list[np.ndarray],
    *,
    gap: float,
    until: float,
    deadline: float,
    cancel: threading.Event | None,
) -> float:
    """The level's best architecture meeting every overlap row, as solver.py finds one; the seconds its
    steps 1-2 took."""
    started = time.monotonic()
    if level.relaxation is None:
        level.relaxation = Relaxation(level.problem)
    for choice in predecessors[len(level.relaxation.predecessors) :]:
        level.relaxation.add_overlap_row(choice)
    step = relax_and_repair(level.problem, level.relaxation, level.bound, gap=gap, deadline=deadline)
    seconds = time.monotonic() - started
    if step.status != "optimal":
        level.empty = step.status == "infeasible"
        return seconds
    level.bound = max(level.bound, step.bound)
    found = step.found
    if found is None or not found.optimal:
        predecessors = level.relaxation.predecessors
        found = prove(
            level.problem, predecessors, step, gap=gap, until=until, deadline=deadline, cancel=cancel
        )
    if found is None:
        level.empty = step.exhausted
        return seconds
    level.found = found
    level.bound = max(level.bound, found.bound)
    return seconds
