"""A search request's slots from the trainer's score table and a profiler LUT's cost table.

The two meet on (slot, operator spec): the trainer scores operators, the profiler costs them, both
name a candidate by its spec. A candidate scored but not costed (or costed but not scored) is an
error naming it, not a silent drop. Scores below zero (a candidate that happened to beat the teacher
on the held-out batches) are taken as 0: no replacement is better than the teacher by construction,
and the search's scores are non-negative.
"""

from shared.schemas.lut import CostTable
from shared.schemas.operators import spec_hash
from shared.schemas.scores import ScoreTable
from shared.schemas.search import Candidate, Slot


def search_slots(scores: ScoreTable, costs: CostTable) -> list[Slot]:
    """Join a score table with a LUT export, slot by slot, candidate by operator spec."""
    costed = {(slot.id, spec_hash(c.operator)): c for slot in costs.slots for c in slot.candidates}
    scored = {(slot.id, spec_hash(c.operator)): c for slot in scores.slots for c in slot.candidates}
    unmatched = sorted(
        f"{key[0]} score only: {scored[key].id}" if key in scored else f"{key[0]} cost only: {costed[key].id}"
        for key in scored.keys() ^ costed.keys()
    )
    if unmatched:
        raise ValueError("scores and costs do not cover the same candidates: " + "; ".join(unmatched))
    slots: dict[str, list[Candidate]] = {}
    for key, score in scored.items():
        cost = costed[key]
        slots.setdefault(key[0], []).append(
            Candidate(id=cost.id, score=max(0.0, score.score), costs=cost.costs, reference=cost.reference)
        )
    return [Slot(id=slot_id, candidates=candidates) for slot_id, candidates in slots.items()]
