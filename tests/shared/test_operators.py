import re

import pytest
import torch
from pydantic import ValidationError

from shared.costs import kv_bytes_per_token, weight_bytes
from shared.operators import build_operator
from shared.schemas.operators import (
    Architecture,
    AttentionOp,
    IdentityOp,
    LayerChoice,
    LinearOp,
    MLPOp,
    fits,
    is_teacher,
    operator_adapter,
    operator_from_name,
    parse_slot_id,
    slot_id,
    spec_hash,
    spec_name,
)
from shared.schemas.shape import PRESETS, ModelShape

TINY = PRESETS["tiny"]
SPECS = [
    IdentityOp(),
    LinearOp(),
    AttentionOp(num_heads=4, num_kv_heads=2, head_dim=16),
    AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8),
    MLPOp(intermediate_size=176),
    MLPOp(intermediate_size=40),
]


def test_spec_hash_is_stable_and_content_based():
    spec = AttentionOp(num_heads=4, num_kv_heads=2, head_dim=16)
    # a literal: the hash is part of stored LUTs and must never change between versions
    assert spec_hash(spec) == "e5a5d276d82aa807"
    same = operator_adapter.validate_json(
        '{"head_dim": 16, "num_kv_heads": 2, "kind": "attention", "num_heads": 4}'
    )
    assert spec_hash(same) == spec_hash(spec)
    assert len({spec_hash(s) for s in SPECS}) == len(SPECS)


@pytest.mark.parametrize(
    "payload",
    [
        {"kind": "conv"},
        {"kind": "attention", "num_heads": 3, "num_kv_heads": 2, "head_dim": 16},
        {"kind": "attention", "num_heads": 4, "num_kv_heads": 2, "head_dim": 15},
        {"kind": "attention", "num_heads": 0, "num_kv_heads": 1, "head_dim": 16},
        {"kind": "mlp", "intermediate_size": -1},
        {"kind": "linear", "rank": 3},
    ],
)
def test_bad_specs_are_rejected(payload):
    with pytest.raises(ValidationError):
        operator_adapter.validate_python(payload)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValidationError, match="multiple of num_kv_heads"):
        ModelShape(**{**TINY.model_dump(), "num_kv_heads": 3})


def test_names_slots_and_fitting():
    assert [spec_name(s) for s in SPECS[:3]] == ["identity", "linear", "attn_h4_kv2_d16"]
    assert slot_id(3, "mlp") == "block3.mlp" and parse_slot_id("block3.attn") == (3, "attention")
    with pytest.raises(ValueError):
        parse_slot_id("layer3.attn")
    assert fits(LinearOp(), "mlp") and not fits(MLPOp(intermediate_size=8), "attention")
    with pytest.raises(ValidationError):
        LayerChoice(attention=MLPOp(intermediate_size=8), mlp=IdentityOp())
    assert is_teacher(SPECS[2], TINY, "attention") and not is_teacher(SPECS[3], TINY, "attention")


@pytest.mark.parametrize("spec", SPECS, ids=spec_name)
def test_operator_shapes_and_exact_weight_bytes(spec):
    torch.manual_seed(0)
    op = build_operator(spec, TINY)
    x = torch.randn(2, 5, TINY.hidden_size)
    y = op(x)
    assert y.shape == x.shape
    n_params = sum(p.numel() for p in op.parameters())
    assert weight_bytes(spec, TINY, dtype_bytes=4) == 4 * n_params
    if isinstance(spec, IdentityOp):
        assert torch.count_nonzero(y) == 0


def test_kv_bytes_per_token_matches_the_cache():
    spec = AttentionOp(num_heads=4, num_kv_heads=2, head_dim=16)
    cache = build_operator(spec, TINY).new_cache(batch=1, max_len=10)
    assert cache.nbytes == 10 * kv_bytes_per_token(spec, dtype_bytes=4)
    assert kv_bytes_per_token(MLPOp(intermediate_size=8), 4) == 0


@pytest.mark.parametrize("spec", [SPECS[2], SPECS[3]], ids=spec_name)
def test_attention_is_causal_and_decoding_matches_prefill(spec):
    torch.manual_seed(0)
    op = build_operator(spec, TINY).eval()
    x = torch.randn(1, 9, TINY.hidden_size)
    full = op(x)
    # causal: a later token does not change earlier outputs
    x2 = x.clone()
    x2[:, -1] += 1.0
    torch.testing.assert_close(op(x2)[:, :-1], full[:, :-1])
    # prefill 4 tokens, then 2, then one at a time through the KV cache: same outputs
    cache = op.new_cache(batch=1, max_len=9)
    steps = [op(x[:, :4], cache), op(x[:, 4:6], cache), *[op(x[:, t : t + 1], cache) for t in range(6, 9)]]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_teacher_architecture_lists_every_slot():
    arch = Architecture.teacher(TINY)
    slots = arch.slots()
    assert [s[0] for s in slots] == ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp"]
    changed = arch.replace("block1.mlp", IdentityOp())
    assert changed.layers[1].mlp == IdentityOp() and arch.layers[1].mlp != IdentityOp()


@pytest.mark.parametrize("spec", SPECS, ids=spec_name)
def test_a_candidate_id_names_its_operator(spec):
    assert operator_from_name(spec_name(spec)) == spec


@pytest.mark.parametrize("name", ["attn_h4_kv2", "mlp_i", "conv", "attn_h3_kv2_d16", "mlp_i0", "Identity"])
def test_other_names_name_no_operator(name):
    with pytest.raises(ValueError):
        operator_from_name(name)


def test_a_search_solution_is_an_architecture_as_it_is():
    solution = {
        "rank": 1,
        "choices": {
            "block1.mlp": "identity",
            "block0.mlp": "mlp_i64",
            "block1.attn": "linear",
            "block0.attn": "attn_h2_kv1_d16",
        },
        "objective": 0.3,
        "costs": {"latency_ms": 1.0},
        "optimal": True,
        "bound": 0.29,
        "gap": 0.01,
    }
    arch = Architecture.model_validate(solution)
    assert list(arch.choices) == ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp"]  # model order
    assert arch.layers[1] == LayerChoice(attention=LinearOp(), mlp=IdentityOp())
    assert arch.model_dump() == {"choices": dict(sorted(solution["choices"].items()))}
    arch.check_shape(TINY)
    assert Architecture.from_operators({s: op for s, _, op in arch.slots()}) == arch


@pytest.mark.parametrize(
    ("choices", "slot"),
    [
        ({"block0.attn": "identity", "block1.attn": "identity", "block1.mlp": "identity"}, "block0.mlp"),
        ({"block0.attn": "mlp_i64", "block0.mlp": "identity"}, "block0.attn"),
        ({"block0.attn": "identity", "block0.mlp": "attn_h2_kv1_d16"}, "block0.mlp"),
        ({"block0.attn": "identity", "block0.mlp": "identity", "layer1.mlp": "identity"}, "layer1.mlp"),
    ],
)
def test_an_incomplete_or_misfitting_architecture_is_refused_naming_the_slot(choices, slot):
    with pytest.raises(ValidationError, match=re.escape(slot)):
        Architecture(choices=choices)


def test_an_architecture_of_the_wrong_depth_names_the_slot():
    arch = Architecture.teacher(TINY)
    with pytest.raises(ValueError, match=r"block1\.attn: missing"):
        Architecture.from_layers(arch.layers[:1]).check_shape(TINY)
    with pytest.raises(ValueError, match=r"block2\.attn: the model has 2 blocks"):
        Architecture.from_layers(arch.layers * 2).check_shape(TINY)
