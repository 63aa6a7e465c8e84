"""K architectures under whole-model budgets: the one slot problem, or -- when a budget on a derived cost
has a peak part -- an exact search over ranges of peak levels.

The slot problem of a range of levels [lo, hi] (whole_model.py: candidates above hi excluded, the summed
parts within limit - lo) holds every architecture meeting the budgets whose peak lies in the range, and
perhaps some that do not. Solved as solver.py solves one solution, it gives a proven bound for the range
and its best architecture. If that architecture meets the budgets, it is the range's best. If not, its
peak m lies above lo, and splitting the range into [lo, below m] and [m, hi] drops it from both (one
excludes its candidate at m, the other leaves it only limit - m) while every architecture meeting the
budgets stays in one of them; each part keeps the bound. Ranges of one level are exact, so the splitting
ends. Solution k is the best over the ranges, each carrying the overlap rows of the solutions before
it, and its proven bound is the least of the ranges' bounds. The range of least bound is solved first,
and one whose bound is within the gap of the best found is not solved. A range keeps its relaxation warm
across solutions, and its best architecture while that meets the new overlap rows (the rows only remove
architectures, so none better can appear).
"""

import bisect
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
class Range:
    spans: dict[str, tuple[int, int]]  # per level cost, the indices of its first and last level
    problem: Problem
    bound: float  # proven lower bound on its architectures that meet the budgets and overlap rows so far
    relaxation: Relaxation | None = None  # built at its first solve, then kept warm
    found: Found | None = None  # its best architecture meeting the budgets, while that meets every row


def search_levels(
    model: WholeModel, *, k: int, gap: float, time_limit_s: float, cancel: threading.Event | None = None
) -> Outcome:
    deadline = time.monotonic() + time_limit_s
    levels = model.levels()
    if not all(levels.values()):  # the caps leave no architecture
        return Outcome("exhausted")
    ranges = _ranges(model, levels, {peak: (0, len(values) - 1) for peak, values in levels.items()}, 0.0)
    outcome = Outcome("complete")
    predecessors: list[np.ndarray] = []
    quick: list[float] = []  # seconds of steps 1-2 per solution, all ranges together
    while len(outcome.found) < k and outcome.status == "complete":
        # the MIPs of this solution, over all ranges, share one time share
        until = time_share(quick or [0.0], k - len(outcome.found) - 1, deadline)
        quick.append(0.0)
        best = None
        while True:
            best = min((r.found for r in ranges if r.found), key=lambda f: f.objective, default=None)
            # a range whose bound is within the gap of the best holds nothing better by more than the gap
            todo = [
                r for r in ranges if not r.found and not (best and within_gap(best.objective, r.bound, gap))
            ]
            if not todo:
                break
            if time.monotonic() >= deadline or stopped(cancel) == "cancelled":
                outcome.status = stopped(cancel)
                break
            span = min(todo, key=lambda r: r.bound)
            status, found, seconds = solve(
                span, predecessors, gap=gap, until=until, deadline=deadline, cancel=cancel
            )
            quick[-1] += seconds
            if status == "empty":
                ranges.remove(span)
            elif status == "stopped":
                outcome.status = stopped(cancel)
                break
            elif (parts := _split(model, levels, span, found)) is None:
                span.found = found
            else:
                ranges.remove(span)
                ranges += parts
        if best is None:
            if not ranges:
                outcome.status = "exhausted"
            elif outcome.status == "complete":
                outcome.status = stopped(cancel)
            break
        bound = min(min(r.bound for r in ranges), best.objective)
        outcome.found.append(
            Found(best.choice, best.objective, bound, within_gap(best.objective, bound, gap))
        )
        predecessors.append(best.choice)
        for r in ranges:
            if r.found and not r.problem.overlaps_hold(r.found.choice, [best.choice]):
                r.found = None
    return outcome


def solve(
    span: Range,
    predecessors: list[np.ndarray],
    *,
    gap: float,
    until: float,
    deadline: float,
    cancel: threading.Event | None,
) -> tuple[str, Found | None, float]:
    """(status, the best architecture of the range's slot problem, seconds of steps 1-2), as solver.py
    finds one; status 'found', 'empty' (none meets its rows) or 'stopped' (time or cancel)."""
    started = time.monotonic()
    if span.relaxation is None:
        span.relaxation = Relaxation(span.problem)
    for choice in predecessors[len(span.relaxation.predecessors) :]:
        span.relaxation.add_overlap_row(choice)
    step = relax_and_repair(span.problem, span.relaxation, span.bound, gap=gap, deadline=deadline)
    seconds = time.monotonic() - started
    if step.status != "optimal":
        return ("empty" if step.status == "infeasible" else "stopped"), None, seconds
    span.bound = max(span.bound, step.bound)
    found = step.found
    if found is None or not found.optimal:
        rows = span.relaxation.predecessors
        found = prove(span.problem, rows, step, gap=gap, until=until, deadline=deadline, cancel=cancel)
    if found is None:
        return ("empty" if step.exhausted else "stopped"), None, seconds
    span.bound = max(span.bound, found.bound)
    return "found", found, seconds


def _ranges(
    model: WholeModel, levels: dict[str, list[float]], spans: dict[str, tuple[int, int]], bound: float
) -> list[Range]:
    """The range as a list: empty when no architecture can meet its slot problem's rows."""
    problem = model.problem({peak: (levels[peak][a], levels[peak][b]) for peak, (a, b) in spans.items()})
    return [] if problem is None else [Range(spans, problem, bound)]


def _split(
    model: WholeModel, levels: dict[str, list[float]], span: Range, found: Found
) -> list[Range] | None:
    """The range in two at the peak of its architecture if that breaks a derived budget with a peak part
    (the only budgets a range relaxes), so that neither part holds it; None if it breaks none."""
    for name in model.broken(found.choice):
        peak = model.parts(name)[1] if name in model.derived else None
        if peak is None:
            continue
        at = bisect.bisect_left(levels[peak], model.value(peak, found.choice))
        lo, hi = span.spans[peak]
        # at <= lo: over only by float rounding, at a level where the slot rows are the budget itself
        if lo < at <= hi:
            return [
                *_ranges(model, levels, span.spans | {peak: (lo, at - 1)}, span.bound),
                *_ranges(model, levels, span.spans | {peak: (at, hi)}, span.bound),
            ]
    return None
