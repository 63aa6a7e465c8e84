"""A request's `format`: with nemotron-nas, every slot keeps only the candidates the DeciLM /
Nemotron-NAS block_configs form expresses (shared/decilm.py), the others excluded.

The search knows a model only by its slots: a slot's type is in its id (block<N>.attn, block<N>.mlp),
an operator in its candidate id (shared.schemas.operators.operator_from_name), and the model's query
heads and head size in the slot's reference candidate (the teacher's attention). A candidate left out
stays in the slot, excluded, so that a reference the form cannot express (a teacher MLP of a width
that is no multiple of 256) still anchors fraction budgets. The one thing the search cannot see, that
the model's head size is hidden / heads as the form's readers compute it, the pools the pipeline and
the trainer build from the shape already keep to.
"""

from shared import decilm
from shared.errors import invalid
from shared.schemas.operators import AttentionOp, SlotType, operator_from_name, parse_slot_id
from shared.schemas.search import Slot


def restrict(slots: list[Slot], format: decilm.Format, field: str = "body") -> list[Slot]:
    """The slots as the search solves them in `format` (unchanged for unast); a 422 naming the slot
    whose id is no slot id, whose pin the form cannot express, or which the form leaves no candidate."""
    if format == "unast":
        return slots
    restricted = []
    for i, slot in enumerate(slots):
        where = f"{field}.slots.{i}"
        try:
            _, slot_type = parse_slot_id(slot.id)
        except ValueError as exc:
            raise invalid(f"{where}.id", f"format {format}: {exc}") from None
        heads, head_dim = _reference_attention(slot)
        problems = {
            c.id: why
            for c in slot.candidates
            if (why := _problem(c.id, slot_type, heads, head_dim)) is not None
        }
        if slot.pin is not None and slot.pin in problems:
            raise invalid(f"{where}.pin", f"format {format}: {problems[slot.pin]}")
        if all(c.id in problems or c.id in slot.exclude for c in slot.candidates):
            first = "; ".join(list(problems.values())[:3])
            raise invalid(where, f"format {format}: no candidate of slot {slot.id!r} is left ({first})")
        exclude = slot.exclude + [cid for cid in problems if cid not in slot.exclude]
        restricted.append(slot.model_copy(update={"exclude": exclude}))
    return restricted


def _reference_attention(slot: Slot) -> tuple[int | None, int | None]:
    """The query heads and head size of the slot's reference candidate, when it is an attention."""
    for candidate in slot.candidates:
        if candidate.reference:
            try:
                spec = operator_from_name(candidate.id)
            except ValueError:
                return None, None
            if isinstance(spec, AttentionOp):
                return spec.num_heads, spec.head_dim
    return None, None


def _problem(candidate_id: str, slot_type: SlotType, heads: int | None, head_dim: int | None) -> str | None:
    try:
        spec = operator_from_name(candidate_id)
    except ValueError as exc:
        return str(exc)
    if isinstance(spec, AttentionOp) and heads is None:
        return f"{candidate_id}: no reference attention candidate in the slot tells the model's heads"
    return decilm.operator_problem(spec, slot_type, num_heads=heads, head_dim=head_dim)
