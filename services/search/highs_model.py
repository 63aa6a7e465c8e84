"""The LP relaxation of Eq. 3 and 4 as a HiGHS model over some candidates, built from arrays in one call.

PuLP builds a model one Python object per variable, which at 320 x 30 candidates costs more than the
LP solve itself, and the LP is re-solved for every solution; so the relaxation hands HiGHS (which PuLP
also drives, via highspy) its arrays directly. Slots left with one candidate are fixed: they become
constants of the objective and of each row's right-hand side.
"""

from dataclasses import dataclass

import highspy
import numpy as np

from services.search.problem import Problem

INF = highspy.kHighsInf


@dataclass(frozen=True)
class Columns:
    slot: np.ndarray  # per column, its slot
    candidate: np.ndarray  # per column, its candidate
    fixed_slot: np.ndarray  # slots with a single candidate left
    fixed_candidate: np.ndarray
    num_free: int  # the first num_free rows are the one-candidate-per-slot rows


def budget_scale(limit: float) -> float:
    """Budget rows are divided by their limit, so solver tolerances are relative to it."""
    return limit if limit > 0 else 1.0


def new_highs(time_limit_s: float) -> highspy.Highs:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)  # deterministic, and the machine is shared
    h.setOptionValue("time_limit", max(time_limit_s, 1e-3))
    return h


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
    cols = Columns(slot, ci, fixed, fixed_candidate, len(free))

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
    lp.col_cost_ = problem.scores[slot, ci].astype(float)
    lp.col_lower_ = np.zeros(num)
    lp.col_upper_ = np.ones(num)
    lp.row_lower_ = np.concatenate([np.asarray(x, dtype=float) for x in lower])
    lp.row_upper_ = np.concatenate([np.asarray(x, dtype=float) for x in upper])
    lp.offset_ = float(problem.scores[fixed, fixed_candidate].sum())
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(entries[order], np.arange(num + 1)).astype(np.int32)
    lp.a_matrix_.index_ = rows[order].astype(np.int32)
    lp.a_matrix_.value_ = values[order]
    return lp, cols
