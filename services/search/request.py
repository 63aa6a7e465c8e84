"""A search request checked and turned into a WholeModel, or a 422 naming the first offending field,
before any solving.

Every sum the search can form must be a float: the scores of the costliest architecture, each cost of
it with the fixed part, each derived cost, and each fraction budget's limit; a sum past the float range
is a 422 naming the field, not an overflow deep in the solver.
"""

import math
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from services.search.whole_model import WholeModel
from shared.errors import invalid
from shared.schemas.search import Budget, Slot
from shared.settings import Settings


def build_whole_model(
    slots: list[Slot],
    budgets: list[Budget],
    *,
    fixed: dict[str, float] | None = None,
    peak_costs: list[str] | None = None,
    derived_costs: dict[str, list[str]] | None = None,
    max_overlap: float,
    settings: Settings,
    field: str = "body",
) -> WholeModel:
    fixed, peak_costs, derived_costs = fixed or {}, peak_costs or [], derived_costs or {}
    _check_slots(slots, settings, field)
    common = set.intersection(*(set(c.costs) for s in slots for c in s.candidates))
    _check_costs(slots, common, fixed, peak_costs, derived_costs, field)
    for b, budget in enumerate(budgets):
        if budget.cost not in common and budget.cost not in derived_costs:
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
    model = WholeModel(
        slot_ids=[s.id for s in slots],
        candidate_ids=[[c.id for c in s.candidates] for s in slots],
        scores=scores,
        allowed=allowed,
        costs=costs,
        fixed={name: fixed[name] for name in sorted(fixed)},
        peaks=frozenset(peak_costs),
        derived={name: tuple(parts) for name, parts in derived_costs.items()},
        budgets={},
        # Solutions always differ in at least one slot, even with max_overlap 1.
        max_overlap=min(math.floor(max_overlap * len(slots)), len(slots) - 1),
    )
    _check_sums(model, field)

    limits = {}
    for b, budget in enumerate(budgets):
        if budget.max is not None:
            limits[budget.cost] = budget.max
        else:
            where = f"{field}.budgets.{b}.fraction"
            limits[budget.cost] = fraction_limit(model, slots, budget.cost, budget.fraction, where)
    return replace(model, budgets=limits)


def fraction_limit(model: WholeModel, slots: list[Slot], cost: str, fraction: float, where: str) -> float:
    """fraction x the reference architecture's whole-model value (a 422 at `where` past the float range)."""
    limit = fraction * model.value(cost, reference_choice(slots, where))
    if not math.isfinite(limit):
        raise invalid(where, f"{fraction} x the reference architecture's {cost} is past the float range")
    return limit


def reference_choice(slots: list[Slot], where: str) -> np.ndarray:
    """The reference architecture; a fraction budget needs exactly one reference candidate per slot."""
    choice = []
    for i, slot in enumerate(slots):
        refs = [j for j, c in enumerate(slot.candidates) if c.reference]
        if len(refs) != 1:
            raise invalid(
                where,
                f"a fraction budget needs exactly one reference candidate per slot; "
                f"slot {i} ({slot.id!r}) has {len(refs)}",
            )
        choice.append(refs[0])
    return np.array(choice)


def _check_slots(slots: list[Slot], settings: Settings, field: str) -> None:
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


def _check_costs(
    slots: list[Slot],
    common: set[str],
    fixed: dict[str, float],
    peak_costs: list[str],
    derived_costs: dict[str, list[str]],
    field: str,
) -> None:
    # a fixed part for a cost the candidates lack would silently leave the fixed part out of budgets
    for name in fixed:
        if name not in common:
            raise invalid(f"{field}.fixed.{name}", _lacking(slots, name))
    for p, name in enumerate(peak_costs):
        if name not in common:
            raise invalid(f"{field}.peak_costs.{p}", _lacking(slots, name))
        if name in peak_costs[:p]:
            raise invalid(f"{field}.peak_costs.{p}", f"cost {name!r} is listed twice")
    anywhere = {name for s in slots for c in s.candidates for name in c.costs}
    for name, parts in derived_costs.items():
        where = f"{field}.derived_costs.{name}"
        if name in anywhere:
            raise invalid(where, f"a derived cost cannot share its name with a candidate cost ({name!r})")
        for p, part in enumerate(parts):
            if part not in common:
                raise invalid(f"{where}.{p}", _lacking(slots, part))
            if part in parts[:p]:
                raise invalid(f"{where}.{p}", f"cost {part!r} is listed twice")
        peaks = [part for part in parts if part in peak_costs]
        if len(peaks) > 1:
            raise invalid(where, f"at most one peak cost per derived cost; it has {', '.join(peaks)}")


def _check_sums(model: WholeModel, field: str) -> None:
    """The costliest architecture's scores and costs are floats, so every architecture's are."""
    if not math.isfinite(_sum(model.scores.max(axis=1))):
        raise invalid(f"{field}.slots", "the slots' largest scores sum past the float range")
    for name, cost in model.costs.items():
        if not math.isfinite(_sum(cost.max(axis=1))):
            raise invalid(f"{field}.slots", f"the slots' largest {name} sum past the float range")
        if not math.isfinite(_sum([*cost.max(axis=1), model.fixed.get(name, 0.0)])):
            raise invalid(f"{field}.fixed.{name}", f"with the slots' largest {name}, past the float range")
    for name, parts in model.derived.items():
        largest = [_largest(model, part) for part in parts]
        if not math.isfinite(_sum(largest)):
            raise invalid(f"{field}.derived_costs.{name}", "its costs sum past the float range")


def _largest(model: WholeModel, name: str) -> float:
    top = model.costs[name].max(axis=1)
    if name in model.peaks:
        return max(model.fixed.get(name, 0.0), float(top.max()))
    return _sum([*top, model.fixed.get(name, 0.0)])


def _sum(values: Iterable[float]) -> float:
    """math.fsum, with inf for a sum past the float range (fsum raises OverflowError there)."""
    try:
        return math.fsum(values)
    except OverflowError:
        return math.inf


def _lacking(slots: list[Slot], cost: str) -> str:
    for slot in slots:
        for cand in slot.candidates:
            if cost not in cand.costs:
                return f"candidate {cand.id!r} of slot {slot.id!r} has no cost {cost!r}"
    return f"unknown cost {cost!r}"
