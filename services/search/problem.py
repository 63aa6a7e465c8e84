"""The slot problem the solver takes (paper Eq. 3 and 4): one candidate per slot, linear budget rows over
the slots' candidates, and overlap rows. whole_model.py builds it from the whole-model budgets.

Slots may have different numbers of candidates: arrays are padded to the widest slot, and `allowed`
marks the candidates a solution may use (padding, excluded, un-pinned and over-cap candidates are not
allowed). Every slot has at least one allowed candidate.
"""

import math
from dataclasses import dataclass

import numpy as np

# Budgets hold up to this relative slack, so that float summation order never decides feasibility.
BUDGET_RTOL = 1e-9


@dataclass(frozen=True)
class Problem:
    slot_ids: list[str]
    candidate_ids: list[list[str]]
    scores: np.ndarray  # (slots, width); 0 where padded
    allowed: np.ndarray  # (slots, width) bool
    costs: dict[str, np.ndarray]  # per budget row, each candidate's part of it -> (slots, width)
    budgets: dict[str, float]  # per budget row, its limit on the slots' sum
    max_overlap: int  # O: a solution shares at most this many slot choices with each earlier one

    def overlaps_hold(self, choice: np.ndarray, predecessors: list[np.ndarray]) -> bool:
        return all(int(np.sum(choice == p)) <= self.max_overlap for p in predecessors)

    @property
    def num_slots(self) -> int:
        return len(self.slot_ids)

    def objective(self, choice: np.ndarray) -> float:
        return math.fsum(self.scores[np.arange(self.num_slots), choice])

    def cost(self, name: str, choice: np.ndarray) -> float:
        return math.fsum(self.costs[name][np.arange(self.num_slots), choice])

    def within_budgets(self, choice: np.ndarray) -> bool:
        return all(
            self.cost(name, choice) <= limit * (1 + BUDGET_RTOL) for name, limit in self.budgets.items()
        )
