import pytest

from shared.candidates import all_candidates, candidates, inheritable, slot_pools, small_candidates
from shared.operators import build_operator
from shared.schemas.operators import (
    AttentionOp,
    IdentityOp,
    LinearOp,
    MLPOp,
    fits,
    parse_slot_id,
    slot_id,
    spec_name,
    teacher_operator,
)
from shared.schemas.shape import PRESETS, ModelShape


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("slot_type", ["attention", "mlp"])
def test_pool_is_teacher_first_then_identity_linear_and_smaller_operators(preset, slot_type):
    shape = PRESETS[preset]
    pool = candidates(shape, slot_type)
    assert pool[:3] == [teacher_operator(shape, slot_type), IdentityOp(), LinearOp()]
    assert len(pool) == len(set(pool)) and len({spec_name(s) for s in pool}) == len(pool)
    assert all(fits(s, slot_type) for s in pool)
    assert candidates(shape, slot_type) == pool  # deterministic
    smaller = pool[3:]
    assert len(smaller) >= 5
    if slot_type == "mlp":
        assert all(s.intermediate_size < shape.intermediate_size for s in smaller)
    else:
        teacher = pool[0]
        for s in smaller:
            assert s.num_heads <= teacher.num_heads and s.head_dim <= teacher.head_dim
            assert s.num_kv_heads <= teacher.num_kv_heads and s.num_heads % s.num_kv_heads == 0
            assert teacher.num_kv_heads % s.num_kv_heads == 0 and inheritable(s, shape)
            assert s.head_dim % 2 == 0
            assert s != teacher


def test_paper_candidates_are_in_the_llama2_pool():
    """The paper's examples: attention with 16 heads of 128 channels; an MLP of expansion about 2."""
    shape = PRESETS["llama2-7b"]
    assert AttentionOp(num_heads=16, num_kv_heads=16, head_dim=128) in candidates(shape, "attention")
    assert MLPOp(intermediate_size=8192) in candidates(shape, "mlp")


def test_odd_sizes_still_give_valid_operators():
    shape = ModelShape(
        vocab_size=100,
        hidden_size=30,
        num_layers=1,
        num_heads=3,
        num_kv_heads=3,
        head_dim=10,
        intermediate_size=50,
    )
    for spec in all_candidates(shape):
        build_operator(spec, shape)  # every spec builds a module
    assert len(all_candidates(shape)) == len(set(all_candidates(shape)))


@pytest.mark.parametrize(("size", "widths"), [(512, [448, 384, 320, 256, 192, 128, 64]), (11008, None)])
def test_the_mlp_grid_keeps_its_seven_widths_on_small_teachers(size, widths):
    shape = PRESETS["llama2-7b"].model_copy(update={"intermediate_size": size, "name": None})
    got = [s.intermediate_size for s in candidates(shape, "mlp")[3:]]
    assert len(got) == 7
    if widths is not None:
        assert got == widths
    else:  # a large teacher keeps the 128 alignment
        assert all(w % 128 == 0 for w in got)


@pytest.mark.parametrize("name", list(PRESETS))
def test_slot_pools_give_every_slot_its_kind_of_candidates(name):
    """Every slot of the model, in model order, the teacher's operator first; the small pool is a
    subset of valid operators (KV heads divide query heads) of the slot's kind."""
    shape = PRESETS[name]
    for pool in ("default", "small"):
        slots = slot_pools(shape, pool)
        assert list(slots) == [slot_id(i, t) for i in range(shape.num_layers) for t in ("attention", "mlp")]
        for slot, specs in slots.items():
            slot_type = parse_slot_id(slot)[1]
            assert specs[0] == teacher_operator(shape, slot_type)
            assert len(set(specs)) == len(specs) and all(fits(s, slot_type) for s in specs)
            for spec in specs:
                if spec.kind == "attention":
                    assert spec.num_heads % spec.num_kv_heads == 0
                    assert shape.num_kv_heads % spec.num_kv_heads == 0
    small = slot_pools(shape, "small")["block0.attn"]
    assert 4 <= len(small) <= 7 and len(small) < len(candidates(shape, "attention"))


def _layout(heads: int, kv_heads: int) -> ModelShape:
    return PRESETS["tiny"].model_copy(update={"num_heads": heads, "num_kv_heads": kv_heads, "name": None})


def _pairs(pool) -> list[tuple[int, int]]:
    """(query heads, KV heads) of a pool's attention candidates, in pool order, without repeats."""
    return list(dict.fromkeys((s.num_heads, s.num_kv_heads) for s in pool if isinstance(s, AttentionOp)))


@pytest.mark.parametrize(
    ("heads", "kv_heads", "default", "small"),
    [
        # KV counts: the divisor of the teacher's nearest each fraction (ties to the larger); query heads:
        # the multiple of that KV count nearest each head fraction
        (10, 5, [(10, 5), (10, 1), (8, 1), (5, 5), (5, 1), (3, 1)], [(10, 5), (10, 1), (5, 5)]),
        (15, 5, [(15, 5), (15, 1), (11, 1), (10, 5), (8, 1), (5, 5), (4, 1)], [(15, 5), (15, 1), (10, 5)]),
        (8, 2, [(8, 2), (8, 1), (6, 2), (6, 1), (4, 2), (4, 1), (2, 2), (2, 1)], [(8, 2), (8, 1), (4, 2)]),
        (6, 6, [(6, 6), (6, 3), (6, 2), (4, 2), (3, 3), (2, 2)], [(6, 6), (6, 3), (3, 3)]),
        (18, 9, [(18, 9), (18, 3), (15, 3), (9, 9), (9, 3), (6, 3)], [(18, 9), (18, 3), (9, 9)]),
        (
            32,
            8,
            [(h, kv) for h in (32, 24, 16, 8) for kv in (8, 4, 2)],
            [(32, 8), (32, 4), (16, 8)],
        ),
    ],
)
def test_attention_pools_merge_whole_kv_groups(heads, kv_heads, default, small):
    """Every KV count divides the teacher's (inherit merges whole groups); largest first."""
    shape = _layout(heads, kv_heads)
    assert _pairs(candidates(shape, "attention")) == default
    assert _pairs(small_candidates(shape, "attention")) == small
    dims = [s.head_dim for s in candidates(shape, "attention") if isinstance(s, AttentionOp)]
    assert dims[:3] == [16, 12, 8]


def test_a_kv_count_that_does_not_divide_the_teachers_is_not_inheritable():
    shape = _layout(10, 5)
    assert not inheritable(AttentionOp(num_heads=10, num_kv_heads=2, head_dim=16), shape)
    assert inheritable(AttentionOp(num_heads=10, num_kv_heads=5, head_dim=8), shape)
    # larger than the teacher in some size: nothing to inherit, random initialisation whatever the count
    assert inheritable(AttentionOp(num_heads=12, num_kv_heads=4, head_dim=16), shape)
    assert all(inheritable(s, shape) for s in [IdentityOp(), LinearOp(), MLPOp(intermediate_size=999)])
