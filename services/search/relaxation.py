"""The LP relaxation of Eq. 3 and 4, kept warm across solutions, and the Lagrangian bound it yields.

Each new solution adds one overlap row and re-solves from the previous basis (a few simplex pivots).
The bound is not read off the LP solver: it is recomputed here, in float64, as the Lagrangian dual
value of the LP's row multipliers, which is a lower bound for ANY non-negative multipliers. The same
multipliers give each candidate a reduced cost: how much choosing it must cost above the bound.
"""

import math

import highspy
import numpy as np

from services.search.highs_model import LP_STATUS, budget_scale, build, new_highs, read_status
from services.search.problem import Problem


class Relaxation:
    def __init__(self, problem: Problem):
        self.problem = problem
        self.predecessors: list[np.ndarray] = []
        lp, self.columns = build(problem, [], problem.allowed)
        self.highs = new_highs(1.0)
        self.highs.passModel(lp)

    def add_overlap_row(self, choice: np.ndarray) -> None:
        cols = self.columns
        shared = np.flatnonzero(choice[cols.slot] == cols.candidate).astype(np.int32)
        rhs = self.problem.max_overlap - np.sum(choice[cols.fixed_slot] == cols.fixed_candidate)
        self.highs.addRow(-highspy.kHighsInf, float(rhs), len(shared), shared, np.ones(len(shared)))
        self.predecessors.append(choice)

    def solve(self, time_limit_s: float) -> tuple[str, np.ndarray | None, np.ndarray | None]:
        """('optimal', x per candidate, row multipliers >= 0) | ('infeasible'|'time_limit', None, None).
        The multipliers are in HiGHS's units: scores x columns.objective_scale."""
        if len(self.columns.slot) == 0:  # every slot fixed (pins): nothing for the LP to do
            choice = self.problem.allowed.argmax(axis=1)
            if not (
                self.problem.within_budgets(choice) and self.problem.overlaps_hold(choice, self.predecessors)
            ):
                return "infeasible", None, None
            rows = len(self.problem.budgets) + len(self.predecessors)
            return "optimal", self.problem.allowed.astype(float), np.zeros(rows)
        # HiGHS measures time_limit against the run time summed over all runs of this (warm) model
        self.highs.setOptionValue("time_limit", self.highs.getRunTime() + max(time_limit_s, 1e-3))
        self.highs.run()
        status = read_status(self.highs, LP_STATUS)
        if status != "optimal":
            return status, None, None
        solution = self.highs.getSolution()
        x = np.zeros(self.problem.allowed.shape)
        x[self.columns.slot, self.columns.candidate] = solution.col_value
        x[self.columns.fixed_slot, self.columns.fixed_candidate] = 1.0
        # rows are (slots, budgets, overlaps); a <= row's dual is <= 0 when minimising
        multipliers = np.maximum(0.0, -np.asarray(solution.row_dual)[self.columns.num_free :])
        return "optimal", x, multipliers


def lagrangian(
    problem: Problem, predecessors: list[np.ndarray], multipliers: np.ndarray, scale: float = 1.0
) -> tuple[float, np.ndarray]:
    """(lower bound, reduced cost per candidate) for budget and overlap multipliers >= 0, given in units
    of scores x `scale` (a power of two, as HiGHS saw them), and returned in the scores' own units.

    For any architecture z meeting the rows: score(z) >= bound + sum over slots of reduced(z). Worked
    out in HiGHS's units with each row's costs divided by its limit first, so that nothing overflows for
    scores or costs near the float limit.
    """
    slots = np.arange(problem.num_slots)
    priced = problem.scores * scale
    constant = []
    for weight, (name, limit) in zip(multipliers, problem.budgets.items(), strict=False):
        priced += weight * (problem.costs[name] / budget_scale(limit))
        constant.append(-weight * (limit / budget_scale(limit)))
    for weight, earlier in zip(multipliers[len(problem.budgets) :], predecessors, strict=True):
        priced[slots, earlier] += weight
        constant.append(-weight * problem.max_overlap)
    priced = np.where(problem.allowed, priced, np.inf)
    cheapest = priced.min(axis=1)
    return math.fsum([*cheapest, *constant]) / scale, (priced - cheapest[:, None]) / scale
