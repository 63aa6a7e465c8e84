"""The search problem as arrays (paper Eq. 3 and 4), built from a request and checked before any work.

Slots may have different numbers of candidates: arrays are padded to the widest slot, and `allowed`
marks the candidates a solution may use (padding, excluded and un-pinned candidates are not allowed).
"""

import math
from dataclasses import dataclass

import numpy as np

from shared.errors import ApiError, invalid
from shared.schemas.search import Budget, Slot
from shared.settings import Settings

# Budgets hold up to this relative slack, so that float summation order never decides feasibility.
BUDGET_RTOL = 1e-9


@dataclass(frozen=True)
class Problem:
    slot_ids: list[str]
    candidate_ids: list[list[str]]
    scores: np.ndarray  # (slots, width); 0 where padded
    allowed: np.ndarray  # (slots, width) bool
    costs: dict[str, np.ndarray]  # every cost all candidates have -> (slots, width)
    budgets: dict[str, float]  # budgeted cost -> max
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

    def min_costs(self) -> dict[str, float]:
        """Per budgeted cost, the smallest value any architecture reaches (each cost on its own)."""
        return {
            name: math.fsum(np.where(self.allowed, self.costs[name], np.inf).min(axis=1))
            for name in self.budgets
        }

    def with_budget(self, name: str, limit: float) -> "Problem":
        return Problem(**{**self.__dict__, "budgets": {**self.budgets, name: limit}})


def build_problem(
    slots: list[Slot], budgets: list[Budget], *, max_overlap: float, settings: Settings, field: str = "body"
) -> Problem:
    """The request's problem, or a 422 naming the first offending field (before any solving)."""
    if len(slots) > settings.search_max_slots:
        raise invalid(f"{field}.slots", f"at most {settings.search_max_slots} slots (UNAST_SEARCH_MAX_SLOTS)")
    seen_slots: set[str] = set()
    for i, slot in enumerate(slots):
        where = f"{field}.slots.{i}"
        if slot.id in seen_slots:
            raise invalid(f"{where}.id", f"duplicate slot id {slot.id!r}")
        seen_slots.add(slot.id)
        if len(slot.candidates) > settings.search_max_candidates:
            limit = settings.search_max_candidates
            raise invalid(f"{where}.candidates", f"at most {limit} candidates (UNAST_SEARCH_MAX_CANDIDATES)")
        ids = [c.id for c in slot.candidates]
        for j, cid in enumerate(ids):
            if cid in ids[:j]:
                raise invalid(f"{where}.candidates.{j}.id", f"duplicate candidate id {cid!r}")
        if slot.pin is not None and slot.pin not in ids:
            raise invalid(f"{where}.pin", f"no candidate {slot.pin!r} in this slot")
        for e, cid in enumerate(slot.exclude):
            if cid not in ids:
                raise invalid(f"{where}.exclude.{e}", f"no candidate {cid!r} in this slot")
            if cid == slot.pin:
                raise invalid(f"{where}.exclude.{e}", f"candidate {cid!r} is both pinned and excluded")
        if set(slot.exclude) >= set(ids):
            raise invalid(f"{where}.exclude", "every candidate of this slot is excluded")

    common = set.intersection(*(set(c.costs) for s in slots for c in s.candidates))
    for b, budget in enumerate(budgets):
        if budget.cost not in common:
            raise invalid(f"{field}.budgets.{b}.cost", _lacking(slots, budget.cost))
        if budget.cost in [x.cost for x in budgets[:b]]:
            raise invalid(f"{field}.budgets.{b}.cost", f"cost {budget.cost!r} is budgeted twice")

    width = max(len(s.candidates) for s in slots)
    scores = np.zeros((len(slots), width))
    allowed = np.zeros((len(slots), width), dtype=bool)
    costs = {name: np.zeros((len(slots), width)) for name in sorted(common)}
    for i, slot in enumerate(slots):
        for j, cand in enumerate(slot.candidates):
            scores[i, j] = cand.score
            allowed[i, j] = cand.id not in slot.exclude and slot.pin in (None, cand.id)
            for name in common:
                costs[name][i, j] = cand.costs[name]

    limits = {}
    for b, budget in enumerate(budgets):
        if budget.max is not None:
            limits[budget.cost] = budget.max
        else:
            limits[budget.cost] = budget.fraction * reference_cost(slots, budget.cost, f"{field}.budgets.{b}")
    return Problem(
        slot_ids=[s.id for s in slots],
        candidate_ids=[[c.id for c in s.candidates] for s in slots],
        scores=scores,
        allowed=allowed,
        costs=costs,
        budgets=limits,
        # Solutions always differ in at least one slot, even with max_overlap 1.
        max_overlap=min(math.floor(max_overlap * len(slots)), len(slots) - 1),
    )


def reference_cost(slots: list[Slot], cost: str, field: str) -> float:
    """The cost of the reference architecture; a fraction budget needs exactly one reference per slot."""
    total = []
    for i, slot in enumerate(slots):
        refs = [c for c in slot.candidates if c.reference]
        if len(refs) != 1:
            raise invalid(
                f"{field}.fraction",
                f"a fraction budget needs exactly one reference candidate per slot; "
                f"slot {i} ({slot.id!r}) has {len(refs)}",
            )
        total.append(refs[0].costs[cost])
    return math.fsum(total)


def _lacking(slots: list[Slot], cost: str) -> str:
    for slot in slots:
        for cand in slot.candidates:
            if cost not in cand.costs:
                return f"candidate {cand.id!r} of slot {slot.id!r} has no cost {cost!r}"
    return f"unknown cost {cost!r}"


def infeasible(problem: Problem) -> ApiError:
    minimum = problem.min_costs()
    return ApiError(
        422,
        "no architecture meets the budgets; details give, per budgeted cost, the smallest value reachable",
        code="infeasible",
        details=[
            {"cost": name, "max": problem.budgets[name], "min_achievable": minimum[name]}
            for name in problem.budgets
        ],
    )
