"""The candidate operators for a model shape: the paper's pool, as a grid of fractions, and a small one.

The default pool, for each slot type: the teacher's own operator first, then identity and the hidden x
hidden linear layer, then smaller operators of the slot's kind -- attention with fewer query heads,
fewer KV heads and/or a smaller head_dim; SwiGLU MLPs with smaller intermediate sizes -- largest
first. The profiler measures these by default and the trainer distils them, so both see the same pool.
The small pool (`unast compress --config quick`) is a few of each kind, for a run of minutes.

Attention candidates start from the teacher's weights (the trainer's inherit.py): a candidate KV head
mean-pools a run of neighbouring teacher KV heads, and its query heads are chosen among those heads'
own queries. That is exact bookkeeping only when the runs are whole, so the grid is built KV count
first: for each KV fraction f, the divisor of the teacher's KV count nearest KV * f; then, for each
head fraction, the multiple of that KV count nearest the fraction of the teacher's heads (ties, in
both, go to the larger size). Every KV count thus comes with the whole head grid (a 15/5 teacher gets
10 and 5 query heads over 5 KV heads, not only MQA), and no candidate needs an uneven merge.
`inheritable` says whether a spec submitted by hand can be inherited.

The servable pools (format "nemotron-nas", `servable_candidates`) hold only what the DeciLM /
Nemotron-NAS `block_configs` form expresses (shared/decilm.py), so that any architecture of them opens
in the engines that read that form: the teacher's operator (the slot's reference, whether or not the
form expresses it), identity, linear, attention with the teacher's query heads and head size and a KV
count from the grid above (a divisor of the teacher's; the small pool: about half), and MLP widths
that are multiples of 256 below the teacher's, the multiple nearest each of the pool's fractions (a
teacher of width 512 gets 256 alone).
The profiler measures the default pool and, for a Llama teacher, the servable one beside it.

The uniform ladder (`uniform_ladder`) is the uniform baseline's: per fraction f of the teacher's size
in steps of 1/40, an attention of about f of the teacher's query heads x head size and an MLP of f of
its width, fine enough that some rung comes within 5% under any latency budget. The profiler
measures it too; a run distils only the rung it picks.
"""

import math
from typing import Literal

from shared import decilm
from shared.decilm import Format
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
SMALL_INTERMEDIATE_FRACTIONS = (3 / 4, 1 / 2, 1 / 4)
Pool = Literal["default", "small"]


def _unique(values) -> list[int]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def _nearest(options, target: float) -> int:
    """The option nearest target; a tie goes to the larger one."""
    return min(options, key=lambda v: (abs(v - target), -v))


def _kv_counts(shape: ModelShape) -> list[int]:
    """Per KV fraction, the divisor of the teacher's KV heads nearest that fraction, largest first."""
    kv = shape.num_kv_heads
    divisors = [d for d in range(1, kv + 1) if kv % d == 0]
    return _unique(_nearest(divisors, kv * f) for f in KV_HEAD_FRACTIONS)


def _heads(shape: ModelShape, kv: int, fraction: float) -> int:
    """The multiple of kv (the teacher's head count is one) nearest the fraction of the teacher's heads."""
    return _nearest(range(kv, shape.num_heads + 1, kv), shape.num_heads * fraction)


def attention_candidates(shape: ModelShape) -> list[AttentionOp]:
    """Every (heads, kv heads, head_dim) of the grid, largest first (see the module docstring)."""
    pairs = {(_heads(shape, kv, f), kv) for kv in _kv_counts(shape) for f in HEAD_FRACTIONS}
    head_dims = _unique(max(2, 2 * round(shape.head_dim * f / 2)) for f in HEAD_DIM_FRACTIONS)
    return [
        AttentionOp(num_heads=h, num_kv_heads=kv, head_dim=d)
        for h, kv in sorted(pairs, reverse=True)
        for d in head_dims
    ]


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


UNIFORM_STEPS = 40  # the ladder's fractions: 39/40 down to 1/40


def uniform_ladder(shape: ModelShape) -> list[tuple[float, AttentionOp, MLPOp]]:
    """Per fraction f of the teacher's size, largest first: the attention whose KV count is the divisor
    of the teacher's nearest f of it, its heads the fewest multiples of that count that reach f of the
    teacher's, its head size (even, at most the teacher's) what brings heads x head size nearest f of
    the teacher's; and the MLP of f of the teacher's width, a multiple of 8 (finer than the pool's
    alignment: a coarse one would leave budgets between rungs)."""
    divisors = [d for d in range(1, shape.num_kv_heads + 1) if shape.num_kv_heads % d == 0]
    size, width = shape.num_heads * shape.head_dim, shape.intermediate_size
    ladder = []
    for step in range(UNIFORM_STEPS - 1, 0, -1):
        f = step / UNIFORM_STEPS
        kv = _nearest(divisors, shape.num_kv_heads * f)
        heads = kv * max(1, math.ceil(shape.num_heads * f / kv - 1e-9))
        head_dim = min(shape.head_dim, max(2, 2 * round(size * f / heads / 2)))
        attention = AttentionOp(num_heads=heads, num_kv_heads=kv, head_dim=head_dim)
        mlp = MLPOp(intermediate_size=max(8, 8 * round(width * f / 8)))
        ladder.append((f, attention, mlp))
    return ladder


def candidates(shape: ModelShape, slot_type: SlotType) -> list[OperatorSpec]:
    """The default pool for one slot type: teacher first, identity, linear, then smaller operators."""
    teacher = teacher_operator(shape, slot_type)
    smaller = attention_candidates(shape) if slot_type == "attention" else mlp_candidates(shape)
    pool = [teacher, IdentityOp(), LinearOp(), *smaller]
    return list(dict.fromkeys(pool))  # specs are frozen, hashable and compare by content


def all_candidates(shape: ModelShape) -> list[OperatorSpec]:
    """The union over both slot types, deduplicated, in a deterministic order (attention's first): the
    default pool, when the teacher's family fits the nemotron-nas form the servable one, and the
    uniform ladder (what the profiler measures by default, so that a run in either format, and its
    uniform baseline, finds every candidate's costs)."""
    servable = decilm.family_problem(shape) is None
    ladder = uniform_ladder(shape)
    return list(
        dict.fromkeys(
            candidates(shape, "attention")
            + (servable_candidates(shape, "attention") if servable else [])
            + [attention for _, attention, _ in ladder]
            + candidates(shape, "mlp")
            + (servable_candidates(shape, "mlp") if servable else [])
            + [mlp for _, _, mlp in ladder]
        )
    )


def small_candidates(shape: ModelShape, slot_type: SlotType) -> list[OperatorSpec]:
    """A few per slot type: attention with about half the KV heads, half the head size, about half the
    query heads (keeping as many KV heads as divide them), half both; MLPs of 3/4, 1/2 and 1/4 the
    width (from the default grid)."""
    teacher = teacher_operator(shape, slot_type)
    if slot_type == "mlp":
        i = shape.intermediate_size
        widths = [m for m in mlp_candidates(shape) if m.intermediate_size in {3 * i // 4, i // 2, i // 4}]
        return [teacher, IdentityOp(), LinearOp(), *(widths or [MLPOp(intermediate_size=max(1, i // 2))])]
    h, kv, d = shape.num_heads, shape.num_kv_heads, shape.head_dim
    kvs = _kv_counts(shape)
    half_dim = max(2, 2 * (d // 4))
    halves = ((_heads(shape, k, 1 / 2), k) for k in kvs)
    heads, heads_kv = next(((n, k) for n, k in halves if n < h), (h, kv))
    pool = [
        teacher,
        IdentityOp(),
        LinearOp(),
        AttentionOp(num_heads=h, num_kv_heads=kvs[min(1, len(kvs) - 1)], head_dim=d),
        AttentionOp(num_heads=h, num_kv_heads=kv, head_dim=half_dim),
        AttentionOp(num_heads=heads, num_kv_heads=heads_kv, head_dim=d),
        AttentionOp(num_heads=heads, num_kv_heads=heads_kv, head_dim=half_dim),
    ]
    return list(dict.fromkeys(pool))


def inheritance_problem(spec: OperatorSpec, teacher: AttentionOp) -> str | None:
    """Why the trainer cannot start `spec` from the weights of the slot's teacher, whose attention is
    `teacher`; None when it can.

    Only attention has a condition: a candidate no larger than the teacher in any size merges whole
    groups of the teacher's KV heads, so its KV count must divide the teacher's. A candidate larger in
    some size inherits nothing and starts from random weights, whatever its KV count.
    """
    if not isinstance(spec, AttentionOp):
        return None
    larger = (
        spec.num_heads > teacher.num_heads
        or spec.num_kv_heads > teacher.num_kv_heads
        or spec.head_dim > teacher.head_dim
    )
    if larger or teacher.num_kv_heads % spec.num_kv_heads == 0:
        return None
    return (
        f"its {spec.num_kv_heads} KV heads do not divide the teacher's {teacher.num_kv_heads}, so the "
        f"teacher's KV heads cannot be merged into them evenly (use a divisor of {teacher.num_kv_heads})"
    )


def inheritable(spec: OperatorSpec, shape: ModelShape) -> bool:
    """Whether the trainer can start `spec` from a teacher of this shape (to refuse a list up front)."""
    return inheritance_problem(spec, teacher_operator(shape, "attention")) is None


def servable_widths(shape: ModelShape, fractions: tuple[float, ...]) -> list[int]:
    """Per fraction, the multiple of 256 below the teacher's width nearest that fraction of it (ties
    to the larger), largest first; none when the teacher's width is 256 or less."""
    step = decilm.WIDTH_MULTIPLE
    options = range(step, shape.intermediate_size, step)
    if not options:
        return []
    return sorted({_nearest(options, shape.intermediate_size * f) for f in fractions}, reverse=True)


def servable_candidates(shape: ModelShape, slot_type: SlotType, pool: Pool = "default") -> list[OperatorSpec]:
    """The servable pool for one slot type (module docstring): teacher first, identity, linear, then the
    smaller operators the nemotron-nas form expresses. ValueError for a family the form has not."""
    if (why := decilm.family_problem(shape)) is not None:
        raise ValueError(why)
    teacher = teacher_operator(shape, slot_type)
    if slot_type == "attention":
        kvs = _kv_counts(shape) if pool == "default" else _kv_counts(shape)[:2]  # small: about half
        smaller: list[OperatorSpec] = [
            AttentionOp(num_heads=shape.num_heads, num_kv_heads=kv, head_dim=shape.head_dim) for kv in kvs
        ]
    else:
        fractions = INTERMEDIATE_FRACTIONS if pool == "default" else SMALL_INTERMEDIATE_FRACTIONS
        smaller = [MLPOp(intermediate_size=w) for w in servable_widths(shape, fractions)]
    servable = [op for op in smaller if op != teacher and decilm.expresses(op, slot_type, shape)]
    return list(dict.fromkeys([teacher, IdentityOp(), LinearOp(), *servable]))


POOLS = {"default": candidates, "small": small_candidates}


def slot_pools(
    shape: ModelShape, pool: Pool = "default", format: Format = "unast"
) -> dict[str, list[OperatorSpec]]:
    """Every slot of the model (block0.attn, block0.mlp, ...) with its candidates from `pool`: all of
    the pool's (format "unast"), or only what the nemotron-nas form expresses ("nemotron-nas", the
    teacher's own operator always kept as the slot's reference; ValueError for a family it has not)."""
    if format == "nemotron-nas":
        by_type = {t: servable_candidates(shape, t, pool) for t in ("attention", "mlp")}
    else:
        by_type = {t: POOLS[pool](shape, t) for t in ("attention", "mlp")}
    return {
        slot_id(layer, slot_type): by_type[slot_type]
        for layer in range(shape.num_layers)
        for slot_type in ("attention", "mlp")
    }


def merged(*pools: dict[str, list[OperatorSpec]]) -> dict[str, list[OperatorSpec]]:
    """Slot pools joined slot by slot: the first's candidates, then the others' it lacks, in order."""
    slots = dict.fromkeys(slot for pool in pools for slot in pool)
    return {slot: list(dict.fromkeys(op for pool in pools for op in pool.get(slot, []))) for slot in slots}
