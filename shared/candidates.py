"""The candidate operators for a model shape: the paper's pool, as a grid of fractions, and a small one.

The default pool, for each slot type: the teacher's own operator first, then identity and the hidden x
hidden linear layer, then smaller operators of the slot's kind -- attention with fewer query heads,
fewer KV heads and/or a smaller head_dim; SwiGLU MLPs with smaller intermediate sizes -- largest
first. The profiler measures these by default and the trainer distils them, so both see the same pool.
The small pool (`unast compress --config quick`) is a few of each kind, for a run of minutes.
"""

import math
from typing import Literal

from shared.schemas.operators import (
    AttentionOp,
    IdentityOp,
    LinearOp,
    MLPOp,
    OperatorSpec,
    SlotType,
    slot_id,
    teacher_operator,
)
from shared.schemas.shape import ModelShape

HEAD_FRACTIONS = (1, 3 / 4, 1 / 2, 1 / 4)
KV_HEAD_FRACTIONS = (1, 1 / 2, 1 / 4)
HEAD_DIM_FRACTIONS = (1, 3 / 4, 1 / 2)
INTERMEDIATE_FRACTIONS = (7 / 8, 3 / 4, 5 / 8, 1 / 2, 3 / 8, 1 / 4, 1 / 8)
Pool = Literal["default", "small"]


def _unique(values) -> list[int]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def attention_candidates(shape: ModelShape) -> list[AttentionOp]:
    """Every (heads, kv heads, head_dim) of the grid that is a valid attention, largest first."""
    heads = _unique(max(1, round(shape.num_heads * f)) for f in HEAD_FRACTIONS)
    head_dims = _unique(max(2, 2 * round(shape.head_dim * f / 2)) for f in HEAD_DIM_FRACTIONS)
    specs = []
    for h in heads:
        # KV heads may not exceed the query heads and must divide them (GQA groups)
        kv_options = [
            kv
            for kv in _unique(min(h, max(1, round(shape.num_kv_heads * f))) for f in KV_HEAD_FRACTIONS)
            if h % kv == 0
        ] or [math.gcd(h, shape.num_kv_heads)]
        specs += [
            AttentionOp(num_heads=h, num_kv_heads=kv, head_dim=d) for kv in kv_options for d in head_dims
        ]
    return specs


def mlp_candidates(shape: ModelShape) -> list[MLPOp]:
    """Fractions of the teacher's intermediate size, rounded to the teacher's own alignment (at most
    128) so that no candidate is slow merely for a ragged size -- but never so coarse that the grid's
    seven widths merge: a small teacher (intermediate size 512: 128 would leave three widths) gets
    steps of at most 1/16 of its size."""
    size = shape.intermediate_size
    fine = 1 << max(0, (size // 16).bit_length() - 1)  # the largest power of two <= size / 16
    align = min(math.gcd(size, 128), fine)
    sizes = _unique(max(align, align * round(size * f / align)) for f in INTERMEDIATE_FRACTIONS)
    return [MLPOp(intermediate_size=s) for s in sizes if s < size]


def candidates(shape: ModelShape, slot_type: SlotType) -> list[OperatorSpec]:
    """The default pool for one slot type: teacher first, identity, linear, then smaller operators."""
    teacher = teacher_operator(shape, slot_type)
    smaller = attention_candidates(shape) if slot_type == "attention" else mlp_candidates(shape)
    pool = [teacher, IdentityOp(), LinearOp(), *smaller]
    return list(dict.fromkeys(pool))  # specs are frozen, hashable and compare by content


def all_candidates(shape: ModelShape) -> list[OperatorSpec]:
    """The union over both slot types, deduplicated, in a deterministic order (attention's first)."""
    return list(dict.fromkeys(candidates(shape, "attention") + candidates(shape, "mlp")))


def small_candidates(shape: ModelShape, slot_type: SlotType) -> list[OperatorSpec]:
    """A few per slot type: attention with half the KV heads, half the head size, half the query
    heads, half both; MLPs of 3/4, 1/2 and 1/4 the width (from the default grid)."""
    teacher = teacher_operator(shape, slot_type)
    if slot_type == "mlp":
        i = shape.intermediate_size
        widths = [m for m in mlp_candidates(shape) if m.intermediate_size in {3 * i // 4, i // 2, i // 4}]
        return [teacher, IdentityOp(), LinearOp(), *(widths or [MLPOp(intermediate_size=max(1, i // 2))])]
    h, kv, d = shape.num_heads, shape.num_kv_heads, shape.head_dim
    half_kv = max(1, kv // 2)
    half_dim = max(2, 2 * (d // 4))
    heads = max(1, h // 2)
    heads_kv = max(k for k in range(1, heads + 1) if heads % k == 0 and k <= kv)
    pool = [
        teacher,
        IdentityOp(),
        LinearOp(),
        AttentionOp(num_heads=h, num_kv_heads=half_kv if h % half_kv == 0 else kv, head_dim=d),
        AttentionOp(num_heads=h, num_kv_heads=kv, head_dim=half_dim),
        AttentionOp(num_heads=heads, num_kv_heads=heads_kv, head_dim=d),
        AttentionOp(num_heads=heads, num_kv_heads=heads_kv, head_dim=half_dim),
    ]
    return list(dict.fromkeys(pool))


POOLS = {"default": candidates, "small": small_candidates}


def slot_pools(shape: ModelShape, pool: Pool = "default") -> dict[str, list[OperatorSpec]]:
    """Every slot of the model (block0.attn, block0.mlp, ...) with its candidates from `pool`."""
    by_type = {t: POOLS[pool](shape, t) for t in ("attention", "mlp")}
    return {
        slot_id(layer, slot_type): by_type[slot_type]
        for layer in range(shape.num_layers)
        for slot_type in ("attention", "mlp")
    }
