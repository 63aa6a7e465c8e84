"""The search as the user states it: whole-model costs and budgets, and the slot problems that meet them.

An architecture's whole-model value of a cost:
- a summed cost: the sum over its slots' candidates plus the fixed part;
- a peak cost: the maximum over its candidates and the fixed part (the parts run one after another, so
  memory for intermediates peaks at the largest one, as in the profiler's estimate);
- a derived cost: the sum of its named costs' whole-model values.
The solver takes linear rows over the slots (problem.py). A budget on a summed cost, or on a derived cost
without a peak part, is one row: the limit less the fixed part. A budget on a peak cost is a cap:
candidates above it are excluded. A budget on a derived cost with a peak part is not linear, but it is
once the peak's level t is fixed: candidates above t excluded, the summed parts within limit - t. Over a
range of levels [lo, hi] (candidates above hi excluded, the summed parts within limit - lo) the slot
problem holds every architecture of those levels and maybe some over budget: levels.py searches ranges
and splits them where an architecture found is over budget.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from services.search.problem import BUDGET_RTOL, Problem
from shared.errors import ApiError
from shared.schemas.search import Unreachable


@dataclass(frozen=True)
class WholeModel:
    slot_ids: list[str]
    candidate_ids: list[list[str]]
    scores: np.ndarray  # (slots, width); 0 where padded
    allowed: np.ndarray  # (slots, width) bool: pins and exclusions (budgets are applied by problem())
    costs: dict[str, np.ndarray]  # every cost all candidates have -> (slots, width)
    fixed: dict[str, float]  # per cost, the model's part outside the slots (absent: 0)
    peaks: frozenset[str]  # costs that aggregate by maximum
    derived: dict[str, tuple[str, ...]]  # derived cost -> the costs it sums
    budgets: dict[str, float]  # budgeted cost -> max on its whole-model value
    max_overlap: int  # O: a solution shares at most this many slot choices with each earlier one

    @property
    def num_slots(self) -> int:
        return len(self.slot_ids)

    def objective(self, choice: np.ndarray) -> float:
        return math.fsum(self.scores[np.arange(self.num_slots), choice])

    def overlaps_hold(self, choice: np.ndarray, predecessors: list[np.ndarray]) -> bool:
        return all(int(np.sum(choice == p)) <= self.max_overlap for p in predecessors)

    def value(self, name: str, choice: np.ndarray) -> float:
        """The architecture's whole-model value of a summed, peak or derived cost."""
        if name in self.derived:
            return math.fsum(self.value(part, choice) for part in self.derived[name])
        taken = self.costs[name][np.arange(self.num_slots), choice]
        if name in self.peaks:
            return max(self.fixed.get(name, 0.0), float(taken.max()))
        return math.fsum([*taken, self.fixed.get(name, 0.0)])

    def costs_of(self, choice: np.ndarray) -> dict[str, float]:
        return {name: self.value(name, choice) for name in [*self.costs, *self.derived]}

    def within_budgets(self, choice: np.ndarray, rtol: float = BUDGET_RTOL) -> bool:
        return not self.broken(choice, rtol)

    def broken(self, choice: np.ndarray, rtol: float = BUDGET_RTOL) -> list[str]:
        """The budgeted costs whose whole-model value the architecture puts over the limit."""
        return [name for name, limit in self.budgets.items() if self.value(name, choice) > limit * (1 + rtol)]

    def with_budget(self, name: str, limit: float) -> "WholeModel":
        return replace(self, budgets={**self.budgets, name: limit})

    def parts(self, name: str) -> tuple[list[str], str | None]:
        """(its summed parts, its peak part or None) of a budgeted summed or derived cost."""
        parts = self.derived.get(name, (name,))
        peak = [p for p in parts if p in self.peaks]
        return [p for p in parts if p not in self.peaks], peak[0] if peak else None

    def level_costs(self) -> list[str]:
        """The peak costs that a budget on a derived cost includes: the search fixes their levels."""
        found = []
        for name in self.budgets:
            if name in self.derived:
                peak = self.parts(name)[1]
                if peak is not None and peak not in found:
                    found.append(peak)
        return found

    def levels(self) -> dict[str, list[float]]:
        """Per level cost, the peak levels an architecture under the caps can have, in increasing order:
        the fixed part's and the candidates' peaks, from the least any architecture reaches."""
        allowed = self._capped()
        levels = {}
        for peak in self.level_costs():
            if allowed is None:
                levels[peak] = []
                continue
            fixed = self.fixed.get(peak, 0.0)
            least = max(fixed, float(np.where(allowed, self.costs[peak], np.inf).min(axis=1).max()))
            reached = np.unique(np.maximum(self.costs[peak][allowed], fixed))
            levels[peak] = reached[reached >= least].tolist()
        return levels

    def _capped(self) -> np.ndarray | None:
        """The allowed candidates under the budgets on peak costs; None when the fixed part is over one."""
        allowed = self.allowed.copy()
        for name, limit in self.budgets.items():
            if name in self.peaks:
                if self.fixed.get(name, 0.0) > limit * (1 + BUDGET_RTOL):
                    return None
                allowed &= self.costs[name] <= limit * (1 + BUDGET_RTOL)
        return allowed

    def problem(self, levels: dict[str, tuple[float, float]] | None = None) -> Problem | None:
        """The slot problem over ranges (lo, hi) of levels of the level costs (none needed when no budgeted
        derived cost has a peak part); None when no architecture can meet its rows and caps."""
        levels = levels or {}
        allowed = self._capped()
        if allowed is None:
            return None
        for peak, (_, hi) in levels.items():
            allowed &= self.costs[peak] <= hi
        rows, limits = {}, {}
        for name, limit in self.budgets.items():
            if name in self.peaks:
                continue
            summed, peak = self.parts(name)
            row = np.sum([self.costs[p] for p in summed], axis=0) if summed else np.zeros(allowed.shape)
            rest = limit - math.fsum(self.fixed.get(p, 0.0) for p in summed)
            if peak is not None:
                rest -= levels[peak][0]
            if -BUDGET_RTOL * limit <= rest < 0:  # rounding of limit - fixed, not an excess
                rest = 0.0
            # costs are >= 0: a candidate over the row's limit on its own is in no architecture meeting it
            allowed &= row <= rest * (1 + BUDGET_RTOL)
            rows[name], limits[name] = row, rest
        if not allowed.any(axis=1).all():
            return None
        return Problem(
            slot_ids=self.slot_ids,
            candidate_ids=self.candidate_ids,
            scores=self.scores,
            allowed=allowed,
            # not-allowed candidates cost 0: they are never chosen, and so stay out of the arithmetic
            costs={name: np.where(allowed, row, 0.0) for name, row in rows.items()},
            budgets=limits,
            max_overlap=self.max_overlap,
        )

    def minimum(self, name: str) -> float:
        """The smallest whole-model value of a cost any architecture reaches (that cost on its own)."""
        summed, peak = self.parts(name)
        row = np.sum([self.costs[p] for p in summed], axis=0) if summed else np.zeros(self.allowed.shape)
        fixed = math.fsum(self.fixed.get(p, 0.0) for p in summed)
        if peak is None:
            return math.fsum([*np.where(self.allowed, row, np.inf).min(axis=1), fixed])
        floor = self.fixed.get(peak, 0.0)
        if not summed:
            return max(floor, float(np.where(self.allowed, self.costs[peak], np.inf).min(axis=1).max()))
        # the least over the peak's levels t of t + the summed parts at their least under t: found in one
        # sweep over the levels, then summed exactly at the best one
        t = _best_level(self.allowed, row, np.maximum(self.costs[peak], floor))
        least = np.where(self.allowed & (self.costs[peak] <= t), row, np.inf).min(axis=1)
        return math.fsum([*least, fixed, t])


def _best_level(allowed: np.ndarray, row: np.ndarray, level: np.ndarray) -> float:
    """The level t minimising t + sum over slots of the least row value among allowed candidates at or
    below t, in O(candidates log candidates): candidates enter in increasing level, each lowering its
    slot's least value, and the running sum is read at each level once every slot has one."""
    slot, candidate = np.nonzero(allowed)
    level, value = level[slot, candidate], row[slot, candidate]
    order = np.lexsort((value, level, slot))  # by slot, then level
    slot, level, value = slot[order], level[order], value[order]
    first = np.r_[True, slot[1:] != slot[:-1]]  # each slot's first candidate to enter
    least = np.concatenate([np.minimum.accumulate(v) for v in np.split(value, np.flatnonzero(first)[1:])])
    change = np.where(first, least, least - np.r_[0.0, least[:-1]])  # the slot sum's change at entry
    order = np.argsort(level, kind="stable")
    level, total, covered = level[order], np.cumsum(change[order]), np.cumsum(first[order])
    last = np.r_[level[1:] != level[:-1], True]  # read each level after all its candidates entered
    whole = np.where(last & (covered == allowed.shape[0]), total + level, np.inf)
    return float(level[int(np.argmin(whole))])


def infeasible(model: WholeModel) -> ApiError:
    return ApiError(
        422,
        "no architecture meets the budgets; details give, per budgeted cost, the smallest whole-model "
        "value reachable",
        code="infeasible",
        details=[
            Unreachable(cost=name, max=limit, min_achievable=model.minimum(name)).model_dump()
            for name, limit in model.budgets.items()
        ],
    )
