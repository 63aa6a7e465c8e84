"""A search request from the trainer's score table and a profiler LUT's cost table.

The two meet on (slot, operator spec): the trainer scores operators, the profiler costs them, both
name a candidate by its spec. A candidate scored but not costed is an error naming it, not a silent
drop; one costed but not scored was not distilled (a LUT may measure more than a distill job
learned), so no architecture can use it and it is left out. Scores below zero (a candidate that
happened to beat the teacher on the held-out batches) are taken as 0: no replacement is better than
the teacher by construction, and the search's scores are non-negative.
"""

import math
from typing import Any

from shared.schemas.lut import CostSlot, CostTable
from shared.schemas.operators import Architecture, spec_hash
from shared.schemas.scores import ScoreTable
from shared.schemas.search import Candidate, SearchRequest, Slot


def search_slots(scores: ScoreTable, costs: CostTable) -> list[Slot]:
    """Join a score table with a LUT export, slot by slot, candidate by operator spec."""
    costed = {(slot.id, spec_hash(c.operator)): c for slot in costs.slots for c in slot.candidates}
    scored = {(slot.id, spec_hash(c.operator)): c for slot in scores.slots for c in slot.candidates}
    unmatched = sorted(f"{slot}: {scored[(slot, h)].id}" for slot, h in scored.keys() - costed.keys())
    if unmatched:
        raise ValueError("the LUT has no cost for these scored candidates: " + "; ".join(unmatched))
    slots: dict[str, list[Candidate]] = {}
    for key, score in scored.items():
        cost = costed[key]
        slots.setdefault(key[0], []).append(
            Candidate(id=cost.id, score=max(0.0, score.score), costs=cost.costs, reference=cost.reference)
        )
    return [Slot(id=slot_id, candidates=candidates) for slot_id, candidates in slots.items()]


def search_request(scores: ScoreTable, costs: CostTable, **request: Any) -> SearchRequest:
    """The whole request: the joined slots, the LUT's fixed part, its peak and derived costs (so that
    budgets and reported costs mean what the profiler's estimate means), and `request`'s fields
    (budgets, k, max_overlap, gap, time_limit_s)."""
    return SearchRequest(
        slots=search_slots(scores, costs),
        fixed=costs.fixed,
        peak_costs=costs.peak_costs,
        derived_costs=costs.derived_costs,
        **request,
    )


def merged(tables: dict[str, CostTable]) -> CostTable:
    """Several LUTs' cost tables as one, for one search under budgets of every regime: the table named
    "" keeps its cost names (latency_ms, memory_bytes, ...), each other's are `<name>.<cost>`
    (decode.latency_ms). A candidate is kept where every table costs it (matched by slot and operator);
    ids, references and operators are the first table's."""
    names = list(tables)

    def prefix(name: str, cost: str) -> str:
        return f"{name}.{cost}" if name else cost

    costed = {
        name: {(s.id, spec_hash(c.operator)): c for s in table.slots for c in s.candidates}
        for name, table in tables.items()
    }
    first = tables[names[0]]
    slots = []
    for slot in first.slots:
        candidates = []
        for c in slot.candidates:
            key = (slot.id, spec_hash(c.operator))
            if all(key in costed[name] for name in names):
                costs = {prefix(n, k): v for n in names for k, v in costed[n][key].costs.items()}
                candidates.append(c.model_copy(update={"costs": costs}))
        slots.append(CostSlot(id=slot.id, candidates=candidates))
    return CostTable(
        lut_id=first.lut_id,
        device_id=first.device_id,
        fixed={prefix(n, k): v for n, t in tables.items() for k, v in t.fixed.items()},
        peak_costs=[prefix(n, c) for n, t in tables.items() for c in t.peak_costs],
        derived_costs={
            prefix(n, c): [prefix(n, part) for part in parts]
            for n, t in tables.items()
            for c, parts in t.derived_costs.items()
        },
        slots=slots,
    )


def architecture_costs(table: CostTable, architecture: Architecture) -> dict[str, float]:
    """An architecture's whole-model costs by the table, as the search and the profiler's estimate add
    them up: the fixed part plus every slot's candidate; peak costs the largest part; derived costs the
    sums of theirs. KeyError naming the slot whose candidate the table does not cost."""
    by_slot = {s.id: {c.id: c.costs for c in s.candidates} for s in table.slots}
    parts = [table.fixed] + [by_slot[slot][candidate] for slot, candidate in architecture.choices.items()]
    names = set().union(*parts) - set(table.derived_costs)
    totals = {
        name: (max if name in table.peak_costs else math.fsum)(p.get(name, 0) for p in parts)
        for name in names
    }
    for name, summed in table.derived_costs.items():
        totals[name] = math.fsum(totals[part] for part in summed)
    return totals
