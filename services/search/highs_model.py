"""Eq. 3 and 4 as a HiGHS model over some candidates, built from arrays in one call: the LP relaxation,
and the core MIP (the same model with integer columns) solved in-process.

PuLP builds a model one Python object per variable, which at 320 x 30 candidates costs more than the
LP solve itself, and the LP is re-solved for every solution; so the relaxation hands HiGHS (which PuLP
also drives, via highspy) its arrays directly. Slots left with one candidate are fixed: they become
constants of the objective and of each row's right-hand side. The core MIP is solved by HiGHS in this
process: CBC through PuLP costs a process start and model files per solve, more than a small core's
whole solve (README: the search benchmark).

HiGHS takes objective coefficients of 1e20 and above as infinite and works to absolute tolerances, so
scores far from 1 are scaled by a power of two (exact in floats) and the duals and bounds it returns
are scaled back. Every HiGHS status is read for what it says; one that none of ours can produce
(a model or solver error) is a SolverError, never taken for a time limit.
"""

import math
import threading
import time
from dataclasses import dataclass

import highspy
import numpy as np

from services.search.problem import Problem

INF = highspy.kHighsInf


# Scores whose largest lies outside [2**-20, 2**20] are scaled to about 1 for HiGHS.
SCALED_SCORES = 2.0**20


class SolverError(RuntimeError):
    """HiGHS ended in a state the search's models cannot reach (a model or solver error)."""


@dataclass(frozen=True)
class Columns:
    slot: np.ndarray  # per column, its slot
    candidate: np.ndarray  # per column, its candidate
    fixed_slot: np.ndarray  # slots with a single candidate left
    fixed_candidate: np.ndarray
    num_free: int  # the first num_free rows are the one-candidate-per-slot rows
    objective_scale: float  # HiGHS's objective = scores x this (a power of two)


def objective_scale(problem: Problem) -> float:
    largest = float(np.max(problem.scores, where=problem.allowed, initial=0.0))
    if largest == 0 or 1 / SCALED_SCORES <= largest <= SCALED_SCORES:
        return 1.0
    # within the float range for any score, subnormal ones included
    return 2.0 ** min(1000, -math.floor(math.log2(largest)))


LP_STATUS = {
    highspy.HighsModelStatus.kOptimal: "optimal",
    highspy.HighsModelStatus.kInfeasible: "infeasible",
    # every column is bounded to [0, 1], so "unbounded or infeasible" can only be infeasible
    highspy.HighsModelStatus.kUnboundedOrInfeasible: "infeasible",
    highspy.HighsModelStatus.kTimeLimit: "time_limit",
    highspy.HighsModelStatus.kIterationLimit: "time_limit",
    highspy.HighsModelStatus.kInterrupt: "time_limit",  # cancelled
}
# a MIP also stops when it has the one solution asked for (first_only)
MIP_STATUS = {**LP_STATUS, highspy.HighsModelStatus.kSolutionLimit: "time_limit"}


def read_status(h: highspy.Highs, statuses: dict) -> str:
    status = h.getModelStatus()
    if status not in statuses:
        raise SolverError(f"HiGHS ended with {h.modelStatusToString(status)}")
    return statuses[status]


def interrupt_on(h: highspy.Highs, cancel: threading.Event | None) -> None:
    """Make a MIP stop (status interrupt) soon after `cancel` is set."""
    if cancel is not None:
        h.cbMipInterrupt.subscribe(lambda event: event.interrupt() if cancel.is_set() else None)


def budget_scale(limit: float) -> float:
    """Budget rows are divided by their limit, so solver tolerances are relative to it."""
    return limit if limit > 0 else 1.0


def new_highs(time_limit_s: float) -> highspy.Highs:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)  # deterministic, and the machine is shared
    h.setOptionValue("time_limit", max(time_limit_s, 1e-3))
    return h


# Rows are scaled to 1 (budget_scale) and overlap rows count slots, so this is the relative slack a
# budget may show; the architecture is then re-checked exactly (Problem.within_budgets).
FEASIBILITY_TOL = 1e-10


@dataclass(frozen=True)
class CoreResult:
    status: str  # 'optimal' (within gap_abs), 'infeasible', 'time_limit'
    choice: np.ndarray | None  # the best architecture found, if any
    bound: float  # proven lower bound over the candidates in the mask (-inf when none was proven)


def solve_core(
    problem: Problem,
    predecessors: list[np.ndarray],
    mask: np.ndarray,
    *,
    gap_abs: float,
    time_limit_s: float,
    start: np.ndarray | None = None,
    first_only: bool = False,
    cancel: threading.Event | None = None,
) -> CoreResult:
    """The best architecture using only candidates in `mask`, within gap_abs of HiGHS's proven bound
    (or the first one found, with `first_only`)."""
    lp, cols = build(problem, predecessors, mask)
    if lp.num_col_ == 0:  # one candidate left per slot: nothing to search
        choice = mask.argmax(axis=1)
        if problem.within_budgets(choice) and problem.overlaps_hold(choice, predecessors):
            return CoreResult("optimal", choice, problem.objective(choice))
        return CoreResult("infeasible", None, np.inf)
    lp.integrality_ = [highspy.HighsVarType.kInteger] * lp.num_col_
    if start is not None and not mask[np.arange(problem.num_slots), start].all():
        start = None
    until = time.monotonic() + time_limit_s
    h = run_mip(
        lp,
        cols,
        gap_abs=gap_abs,
        time_limit_s=time_limit_s,
        start=start,
        first_only=first_only,
        cancel=cancel,
    )
    if not consistent(h, lp):
        # HiGHS 1.16's MIP presolve, given a start, can return the start with another point's objective
        # and a bound from it, as "optimal": such a run is not trusted, and solved again without both
        h = run_mip(
            lp,
            cols,
            gap_abs=gap_abs,
            time_limit_s=until - time.monotonic(),
            first_only=first_only,
            cancel=cancel,
            presolve=False,
        )
    status, info = read_status(h, MIP_STATUS), h.getInfo()
    if status == "infeasible":
        return CoreResult("infeasible", None, np.inf)
    bound = info.mip_dual_bound / cols.objective_scale if np.isfinite(info.mip_dual_bound) else -np.inf
    if info.primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return CoreResult("time_limit", None, bound)
    x = np.asarray(h.getSolution().col_value)
    choice = np.full(problem.num_slots, -1)
    on = x > 0.5
    choice[cols.slot[on]] = cols.candidate[on]
    choice[cols.fixed_slot] = cols.fixed_candidate
    return CoreResult(status, choice, bound)


def run_mip(
    lp: highspy.HighsLp,
    cols: Columns,
    *,
    gap_abs: float,
    time_limit_s: float,
    first_only: bool,
    cancel: threading.Event | None,
    start: np.ndarray | None = None,
    presolve: bool = True,
) -> highspy.Highs:
    h = new_highs(time_limit_s)
    interrupt_on(h, cancel)
    h.setOptionValue("mip_abs_gap", gap_abs * cols.objective_scale)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_feasibility_tolerance", FEASIBILITY_TOL)
    h.setOptionValue("primal_feasibility_tolerance", FEASIBILITY_TOL)
    if not presolve:
        h.setOptionValue("presolve", "off")
    if first_only:
        h.setOptionValue("mip_max_improving_sols", 1)
    h.passModel(lp)
    if start is not None:
        warm = highspy.HighsSolution()
        warm.col_value = (start[cols.slot] == cols.candidate).astype(float)
        warm.value_valid = True
        h.setSolution(warm)
    h.run()
    return h


def consistent(h: highspy.Highs, lp: highspy.HighsLp) -> bool:
    """The objective HiGHS reports is its solution's, and its bound is not above it."""
    info = h.getInfo()
    if info.primal_solution_status != highspy.SolutionStatus.kSolutionStatusFeasible:
        return True
    value = float(np.dot(lp.col_cost_, h.getSolution().col_value)) + lp.offset_
    slack = 1e-9 * max(1.0, abs(value))
    return abs(info.objective_function_value - value) <= slack and info.mip_dual_bound <= value + slack


def build(
    problem: Problem, predecessors: list[np.ndarray], mask: np.ndarray
) -> tuple[highspy.HighsLp, Columns]:
    count = mask.sum(axis=1)
    free = np.flatnonzero(count > 1)
    fixed = np.flatnonzero(count == 1)
    fixed_candidate = mask[fixed].argmax(axis=1)
    local, ci = np.nonzero(mask[free])
    slot = free[local]
    num = len(slot)
    cols = Columns(slot, ci, fixed, fixed_candidate, len(free), objective_scale(problem))

    rows, entries, values, lower, upper = [local], [np.arange(num)], [np.ones(num)], [], []
    # one candidate per slot
    lower.append(np.ones(len(free)))
    upper.append(np.ones(len(free)))
    row = len(free)
    for name, limit in problem.budgets.items():
        # the budget on this cost, less what the fixed slots already use
        cost, scale = problem.costs[name], budget_scale(limit)
        rows.append(np.full(num, row))
        entries.append(np.arange(num))
        values.append(cost[slot, ci] / scale)
        lower.append([-INF])
        upper.append([(limit - cost[fixed, fixed_candidate].sum()) / scale])
        row += 1
    for earlier in predecessors:
        # Eq. 4: at most O choices shared with an earlier solution
        shared = np.flatnonzero(earlier[slot] == ci)
        rows.append(np.full(len(shared), row))
        entries.append(shared)
        values.append(np.ones(len(shared)))
        lower.append([-INF])
        upper.append([float(problem.max_overlap - np.sum(earlier[fixed] == fixed_candidate))])
        row += 1

    rows, entries, values = np.concatenate(rows), np.concatenate(entries), np.concatenate(values)
    order = np.lexsort((rows, entries))
    lp = highspy.HighsLp()
    lp.num_col_ = num
    lp.num_row_ = row
    lp.col_cost_ = problem.scores[slot, ci] * cols.objective_scale
    lp.col_lower_ = np.zeros(num)
    lp.col_upper_ = np.ones(num)
    lp.row_lower_ = np.concatenate([np.asarray(x, dtype=float) for x in lower])
    lp.row_upper_ = np.concatenate([np.asarray(x, dtype=float) for x in upper])
    lp.offset_ = float(problem.scores[fixed, fixed_candidate].sum() * cols.objective_scale)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(entries[order], np.arange(num + 1)).astype(np.int32)
    lp.a_matrix_.index_ = rows[order].astype(np.int32)
    lp.a_matrix_.value_ = values[order]
    return lp, cols
