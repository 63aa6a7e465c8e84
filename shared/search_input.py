"""A search request from the trainer's score table and a profiler LUT's cost table.

The two meet on (slot, operator spec): the trainer scores operators, the profiler costs them, both
name a candidate by its spec. A candidate scored but not costed is an error naming it, not a silent
drop; one costed but not scored was not distilled (a LUT may measure more than a distill job
learned), so no architecture can use it and it is left out. Scores below zero (a candidate that
happened to beat the teacher on the held-out batches) are taken as 0: no replacement is better than
the teacher by construction, and the search's scores are non-negative.
"""

from typing import Any

from shared.schemas.lut import CostTable
from shared.schemas.operators import spec_hash
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
