"""Solve Eq. 3 and 4 as a MIP restricted to some candidates (the 'core'), with its proven bound."""

from dataclasses import dataclass

import highspy
import numpy as np

from services.search.highs_model import build, new_highs
from services.search.problem import Problem

Status = highspy.HighsModelStatus


@dataclass(frozen=True)
class CoreResult:
    status: str  # 'optimal' (within the gap), 'infeasible', 'stopped' (reached stop_at), 'time_limit'
    choice: np.ndarray | None
    bound: float  # proven lower bound over the core (inf when infeasible)


def solve_core(
    problem: Problem,
    predecessors: list[np.ndarray],
    mask: np.ndarray,
    *,
    gap: float,
    time_limit_s: float,
    stop_at: float | None = None,
    start: np.ndarray | None = None,
) -> CoreResult:
    """Optimum over the candidates in `mask` within `gap`, or the first solution scoring <= stop_at.

    `start`, an architecture inside the mask meeting every row, seeds the MIP's incumbent.
    """
    if mask.sum(axis=1).max() == 1:  # every slot fixed: nothing to solve
        choice = mask.argmax(axis=1)
        if problem.within_budgets(choice) and problem.overlaps_hold(choice, predecessors):
            return CoreResult("optimal", choice, problem.objective(choice))
        return CoreResult("infeasible", None, np.inf)
    lp, columns = build(problem, predecessors, mask, integer=True)
    h = new_highs(time_limit_s)
    h.setOptionValue("mip_rel_gap", gap)
    h.setOptionValue("mip_abs_gap", 0.0)
    h.passModel(lp)
    if start is not None and mask[np.arange(problem.num_slots), start].all():
        seed = highspy.HighsSolution()
        seed.col_value = (start[columns.slot] == columns.candidate).astype(float)
        h.setSolution(seed)
    stopped = []
    if stop_at is not None:

        def stop(_kind, _message, data_out, data_in, _user):
            if data_out.objective_function_value <= stop_at:
                stopped.append(True)
                data_in.user_interrupt = True

        h.setCallback(stop, None)
        h.startCallback(highspy.cb.HighsCallbackType.kCallbackMipImprovingSolution)
    h.run()
    status, info = h.getModelStatus(), h.getInfo()
    if status == Status.kInfeasible:
        return CoreResult("infeasible", None, np.inf)
    # Gate on the solution status, not only the model status: a time limit also ends "with a model".
    choice = None
    if info.primal_solution_status == highspy.SolutionStatus.kSolutionStatusFeasible:
        choice = columns.choice(problem.num_slots, np.asarray(h.getSolution().col_value))
    if status == Status.kOptimal and choice is not None:
        return CoreResult("optimal", choice, info.mip_dual_bound)
    return CoreResult("stopped" if stopped else "time_limit", choice, info.mip_dual_bound)
