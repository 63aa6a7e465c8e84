"""The nemotron-nas form as its public readers read it (tests/shared/decilm_reference.py, written from
the form's definition alone): what shared/decilm.py writes for any architecture of the servable pools
reads back as the same architecture, and the servable pools hold only what the form expresses."""

import json
import random
from pathlib import Path

import pytest

from shared import decilm
from shared.candidates import servable_candidates, slot_pools
from shared.schemas.operators import (
    Architecture,
    AttentionOp,
    IdentityOp,
    LinearOp,
    MLPOp,
    OperatorSpec,
    teacher_operator,
)
from shared.schemas.shape import PRESETS, ModelShape
from tests.shared.decilm_reference import FormError, read_blocks

ROOT = Path(__file__).parents[2]
DEMO = ModelShape.from_hf_config(json.loads((ROOT / "models/shakespeare-teacher/config.json").read_text()))
SHAPES = {"demo": DEMO, **{name: PRESETS[name] for name in ("llama2-7b", "llama3-8b", "small", "tiny")}}


def expected(spec: OperatorSpec):
    """An operator in the reference reader's terms."""
    match spec:
        case IdentityOp():
            return "no_op"
        case LinearOp():
            return "linear"
        case AttentionOp():
            return spec.num_heads, spec.num_kv_heads, spec.head_dim
        case MLPOp():
            return spec.intermediate_size


def servable_architectures(shape: ModelShape, pool: str, count: int, seed: int) -> list[Architecture]:
    """Random architectures of the servable pool (its teacher operators only where the form has them),
    and the all-identity, all-linear and smallest ones."""
    pools = {
        slot: [
            op for op in ops if decilm.expresses(op, "attention" if slot.endswith("attn") else "mlp", shape)
        ]
        for slot, ops in slot_pools(shape, pool, "nemotron-nas").items()
    }
    rng = random.Random(seed)
    made = [
        Architecture.from_operators({s: rng.choice(ops) for s, ops in pools.items()}) for _ in range(count)
    ]
    made += [Architecture.from_operators(dict.fromkeys(pools, op)) for op in (IdentityOp(), LinearOp())]
    made.append(Architecture.from_operators({s: ops[-1] for s, ops in pools.items()}))
    return made


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("pool", ["default", "small"])
def test_every_servable_architecture_reads_back_the_same_through_the_reference_reader(name, pool):
    shape = SHAPES[name]
    for architecture in servable_architectures(shape, pool, count=12, seed=len(name)):
        config = json.loads(json.dumps(decilm.config(architecture, shape, "float32")))  # as a file has it
        read = read_blocks(config)
        assert read == [(expected(layer.attention), expected(layer.mlp)) for layer in architecture.layers]
        assert decilm.architecture(config, shape) == architecture


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_servable_pools_hold_only_what_the_form_expresses_and_the_teacher(name):
    shape = SHAPES[name]
    for pool in ("default", "small"):
        for slot_type in ("attention", "mlp"):
            ops = servable_candidates(shape, slot_type, pool)
            assert ops[:3] == [teacher_operator(shape, slot_type), IdentityOp(), LinearOp()]
            assert all(decilm.expresses(op, slot_type, shape) for op in ops[1:])
            for op in ops[3:]:
                if slot_type == "mlp":
                    assert op.intermediate_size % 256 == 0 and op.intermediate_size < shape.intermediate_size
                else:
                    assert (op.num_heads, op.head_dim) == (shape.num_heads, shape.head_dim)
                    assert shape.num_kv_heads % op.num_kv_heads == 0  # inheritable: whole KV groups
                    assert op.num_kv_heads < shape.num_kv_heads


def test_the_demo_teacher_gets_its_kv_groupings_and_a_width_of_256():
    """hidden 192, 6 heads of 32 (6 KV), width 512: the form's widths below it are 256 alone."""
    attention = slot_pools(DEMO, "default", "nemotron-nas")["block0.attn"]
    mlp = slot_pools(DEMO, "default", "nemotron-nas")["block0.mlp"]
    assert [op for op in attention if isinstance(op, AttentionOp)] == [
        AttentionOp(num_heads=6, num_kv_heads=kv, head_dim=32) for kv in (6, 3, 2)
    ]
    assert mlp == [MLPOp(intermediate_size=512), IdentityOp(), LinearOp(), MLPOp(intermediate_size=256)]
    assert (
        decilm.config(
            Architecture.from_operators({"block0.attn": attention[3], "block0.mlp": mlp[3]}),
            DEMO.model_copy(update={"num_layers": 1}),
            "float32",
        )["block_configs"][0]["ffn"]["ffn_mult"]
        == 2.0
    )


def test_the_entries_carry_exactly_the_fields_nvidia_writes():
    shape = SHAPES["llama3-8b"]
    architecture = servable_architectures(shape, "default", count=1, seed=0)[0]
    for block in decilm.config(architecture, shape, "bfloat16")["block_configs"]:
        assert list(block["attention"]) == list(decilm.ATTENTION_FIELDS)
        assert list(block["ffn"]) == list(decilm.FFN_FIELDS)
        assert block["attention"]["sparsify"] is None and block["attention"]["unshifted_sink"] is False


def test_a_head_size_other_than_hidden_over_heads_is_no_attention_of_the_form():
    """mlx-lm and llama.cpp compute the head size as hidden / heads: a teacher whose head size is not
    would load with other shapes, so only identity and linear replace its attention."""
    shape = PRESETS["llama3-8b"].model_copy(update={"head_dim": 64, "name": None})
    attention = servable_candidates(shape, "attention")
    assert attention == [teacher_operator(shape, "attention"), IdentityOp(), LinearOp()]
    assert "hidden / heads" in decilm.problem(attention[0], "attention", shape)


def test_the_reference_reader_refuses_what_the_form_does_not_say():
    shape = SHAPES["small"]
    architecture = servable_architectures(shape, "small", count=1, seed=1)[0]
    good = decilm.config(architecture, shape, "float32")
    broken = [
        ("window_length", lambda c: c["block_configs"][0]["attention"].update(window_length=64)),
        ("keys", lambda c: c["block_configs"][0]["ffn"].pop("sparsify")),
        ("keys", lambda c: c["block_configs"][0]["attention"].update(mamba=None)),
        (
            "n_heads_in_group",
            lambda c: c["block_configs"][0]["attention"].update(
                n_heads_in_group=3, no_op=False, replace_with_linear=False
            ),
        ),
        ("head_dim", lambda c: c.update(head_dim=16)),
        ("block_configs", lambda c: c["block_configs"].pop()),
    ]
    for needle, damage in broken:
        config = json.loads(json.dumps(good))
        damage(config)
        with pytest.raises(FormError, match=needle):
            read_blocks(config)
