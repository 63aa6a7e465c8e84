"""A feasible architecture near the LP optimum: round, repair the rows it breaks, then improve by moves.

A move changes one slot's candidate (or two slots' at once, so that one can pay for the other's
budget). Everything is vectorised over all candidates; no solver involved. The result is only an
incumbent: its quality is judged against the proven bound by the caller.
"""

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

    def usage(self, choice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slots = np.arange(self.problem.num_slots)
        return self.costs[:, slots, choice].sum(axis=1), (self.previous == choice).sum(axis=1)

    def deltas(self, choice: np.ndarray):
        """Per move (slot, candidate): change of score, of each budget row, of each overlap row."""
        slots = np.arange(self.problem.num_slots)
        d_score = self.problem.scores - self.problem.scores[slots, choice][:, None]
        d_cost = self.costs - self.costs[:, slots, choice][:, :, None]
        width = self.problem.scores.shape[1]
        agree = self.previous[:, :, None] == np.arange(width)[None, None, :]  # (P, slots, width)
        d_overlap = agree.astype(np.int8) - (self.previous == choice)[:, :, None]
        return d_score, d_cost, d_overlap


def repair(
    problem: Problem, predecessors: list[np.ndarray], x: np.ndarray, mask: np.ndarray, *, rounds: int = 200
) -> np.ndarray | None:
    rows = Rows(problem, predecessors, mask)
    choice = np.where(mask, x, -1.0).argmax(axis=1)
    overlap_limit = problem.max_overlap
    for _ in range(rounds):
        used, shared = rows.usage(choice)
        over = np.concatenate(
            [(used - rows.limits) / np.maximum(rows.limits, 1e-12), (shared - overlap_limit) / 1.0]
        )
        if over.size == 0 or over.max() <= 1e-12:
            return _improve(problem, rows, choice)
        worst = int(over.argmax())
        d_score, d_cost, d_overlap = rows.deltas(choice)
        new_used = used[:, None, None] + d_cost
        new_shared = shared[:, None, None] + d_overlap
        # a move must lower the worst row and may not break a row that holds
        lowers = (d_cost[worst] if worst < len(used) else d_overlap[worst - len(used)]) < 0
        keeps = np.all((new_used <= rows.limits[:, None, None] * (1 + 1e-12)) | (d_cost <= 0), axis=0)
        keeps &= np.all((new_shared <= overlap_limit) | (d_overlap <= 0), axis=0)
        allowed = mask & lowers & keeps
        if not allowed.any():
            return None
        drop = -(d_cost[worst] if worst < len(used) else d_overlap[worst - len(used)])
        ratio = np.where(allowed, d_score / np.where(allowed, drop, 1), np.inf)
        i, j = np.unravel_index(int(ratio.argmin()), ratio.shape)
        choice = choice.copy()
        choice[i] = j
    return None


def _improve(problem: Problem, rows: Rows, choice: np.ndarray, rounds: int = 200) -> np.ndarray:
    """Take the best score-lowering move (single or pair) that keeps every row, until there is none."""
    for _ in range(rounds):
        used, shared = rows.usage(choice)
        d_score, d_cost, d_overlap = rows.deltas(choice)
        slack = rows.limits - used
        room = problem.max_overlap - shared
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
        flat_cost = d_cost.reshape(len(used), d_score.size)
        flat_overlap = d_overlap.reshape(len(shared), d_score.size)
        for move in tempting:
            same_slot = others // width == move // width
            total_cost = flat_cost[:, move, None] + flat_cost[:, others]
            total_overlap = flat_overlap[:, move, None] + flat_overlap[:, others]
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
