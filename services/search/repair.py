"""A feasible architecture near the LP optimum: round, repair the rows it breaks, then improve by moves.

A move changes one slot's candidate (or two slots' at once, so that one can pay for the other's
budget). Everything is vectorised over all candidates; no solver involved. The result is only an
incumbent: its quality is judged against the proven bound by the caller.
"""

import time

import numpy as np

from services.search.highs_model import budget_scale
from services.search.problem import Problem

PAIR_CANDIDATES = 64  # best single moves tried with a paying second move


class Rows:
    """Row usage of an architecture: budgets (as fractions of their limit) and overlaps (slot counts)."""

    def __init__(self, problem: Problem, predecessors: list[np.ndarray], mask: np.ndarray):
        self.problem, self.mask = problem, mask
        names = list(problem.budgets)
        self.costs = np.array([problem.costs[n] / budget_scale(problem.budgets[n]) for n in names])
        self.costs = self.costs.reshape(len(names), *problem.scores.shape)
        self.limits = np.array([problem.budgets[n] / budget_scale(problem.budgets[n]) for n in names])
        self.previous = np.array(predecessors, dtype=int).reshape(len(predecessors), problem.num_slots)
        width = problem.scores.shape[1]
        self.agree = self.previous[:, :, None] == np.arange(width)[None, None, :]  # (rows, slots, width)

    def usage(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slots = np.arange(self.problem.num_slots)
        return self.costs[:, slots, choice].sum(axis=1), (self.previous == choice).sum(axis=1)

    def violation(self, used: np.ndarray, shared: np.ndarray) -> np.ndarray:
        """How far rows are broken: budgets in fractions of their limit, overlaps in 1/slots per slot."""
        over_budget = np.maximum(used - self.limits.reshape(-1, *[1] * (used.ndim - 1)) * (1 + 1e-12), 0)
        over_overlap = np.maximum(shared - self.problem.max_overlap, 0) / self.problem.num_slots
        return over_budget.sum(axis=0) + over_overlap.sum(axis=0)

    def deltas(self, choice: np.ndarray, overlaps: np.ndarray):
        """Per move (slot, candidate): change of score, of each budget row, of the chosen overlap rows.

        One move changes an overlap row by at most 1, so only rows near their limit need looking at.
        """
        slots = np.arange(self.problem.num_slots)
        d_score = self.problem.scores - self.problem.scores[slots, choice][:, None]
        d_cost = self.costs - self.costs[:, slots, choice][:, :, None]
        d_overlap = self.agree[overlaps].astype(np.int8) - (self.previous[overlaps] == choice)[:, :, None]
        return d_score, d_cost, d_overlap


def repair(
    problem: Problem, predecessors: list[np.ndarray], x: np.ndarray, mask: np.ndarray, *, deadline: float
) -> np.ndarray | None:
    """Round the LP solution x, then take the move with the least score added per unit of violation
    removed until every row holds (an overlap slot counts as 1/slots of a budget); None if stuck or
    out of time."""
    rows = Rows(problem, predecessors, mask)
    choice = np.where(mask, x, -1.0).argmax(axis=1)
    for _ in range(4 * problem.num_slots):
        used, shared = rows.usage(choice)
        full = shared >= problem.max_overlap  # the overlap rows one move can break or mend
        shared = shared[full]
        now = rows.violation(used[:, None, None], shared[:, None, None])
        if now <= 0:
            return _improve(problem, rows, choice, deadline)
        if time.monotonic() > deadline:
            return None
        d_score, d_cost, d_overlap = rows.deltas(choice, full)
        drop = now - rows.violation(used[:, None, None] + d_cost, shared[:, None, None] + d_overlap)
        movable = mask & (drop > 1e-15)
        if not movable.any():
            return None
        ratio = np.where(movable, d_score / np.where(movable, drop, 1.0), np.inf)
        i, j = np.unravel_index(int(ratio.argmin()), ratio.shape)
        choice = choice.copy()
        choice[i] = j
    return None


def _improve(problem: Problem, rows: Rows, choice: np.ndarray, deadline: float) -> np.ndarray:
    """Take the best score-lowering move (single or pair) that keeps every row, until there is none."""
    while time.monotonic() < deadline:
        used, shared = rows.usage(choice)
        room = problem.max_overlap - shared
        tight = room < 2  # a pair adds at most 2 shared slots: other overlap rows cannot break
        room = room[tight]
        d_score, d_cost, d_overlap = rows.deltas(choice, tight)
        slack = rows.limits - used
        fits = rows.mask & np.all(d_cost <= slack[:, None, None] * (1 + 1e-12) + 1e-15, axis=0)
        fits &= np.all(d_overlap <= room[:, None, None], axis=0)
        gain = np.where(fits, d_score, np.inf)
        best_single = float(gain.min())
        # pairs: a score-lowering move that breaks a row, paid for by a second move in another slot
        tempting = np.flatnonzero((rows.mask & (d_score < 0) & ~fits).ravel())
        tempting = tempting[np.argsort(d_score.ravel()[tempting])][:PAIR_CANDIDATES]
        best_pair, pair = np.inf, None
        others = np.flatnonzero(rows.mask.ravel())
        width = problem.scores.shape[1]
        flat_cost = d_cost.reshape(len(used), d_score.size)[:, others]
        move_cost = d_cost.reshape(len(used), d_score.size)
        move_overlap = d_overlap.reshape(len(room), d_score.size)
        flat_overlap = move_overlap[:, others]
        for move in tempting:
            same_slot = others // width == move // width
            total_cost = move_cost[:, move, None] + flat_cost
            total_overlap = move_overlap[:, move, None] + flat_overlap
            ok = np.all(total_cost <= slack[:, None] * (1 + 1e-12) + 1e-15, axis=0)
            ok &= np.all(total_overlap <= room[:, None], axis=0) & ~same_slot
            if ok.any():
                total = d_score.ravel()[move] + np.where(ok, d_score.ravel()[others], np.inf)
                k = int(total.argmin())
                if total[k] < best_pair:
                    best_pair, pair = float(total[k]), (move, others[k])
        if min(best_single, best_pair) >= -1e-15:
            return choice
        choice = choice.copy()
        if best_single <= best_pair:
            i, j = np.unravel_index(int(gain.argmin()), gain.shape)
            choice[i] = j
        else:
            for move in pair:
                choice[move // width] = move % width
    return choice
