"""shared/rope.py against transformers' own RoPE init functions, bit for bit, for every rope type and
head sizes smaller than the teacher's."""

import copy

import pytest
import torch

from shared.rope import ROPE_TYPES, frequencies, is_dynamic
from shared.schemas.shape import ModelShape

transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding  # noqa: E402

MAX = 256  # max_position_embeddings
HEAD_DIMS = (12, 16, 64)  # all below the shape's own head_dim (128): compressed candidates
YARN = {"rope_type": "yarn", "factor": 4.0}
SCALINGS = {
    "none": None,
    "default": {"rope_type": "default"},
    "linear": {"rope_type": "linear", "factor": 4.0},
    "linear-legacy-type": {"type": "linear", "factor": 2.5},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "llama3-short-original": {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 2.0,
        "original_max_position_embeddings": 16,
    },
    # max_position_embeddings already scaled (Qwen-style): the correction range uses the original
    "yarn": {**YARN, "original_max_position_embeddings": MAX // 4},
    "yarn-no-original": YARN,  # transformers falls back to max_position_embeddings
    "yarn-betas-untruncated": {**YARN, "beta_fast": 16, "beta_slow": 2, "truncate": False},
    "yarn-mscale": {**YARN, "factor": 40.0, "mscale": 0.707, "mscale_all_dim": 1.0},
    "yarn-mscale-equal": {**YARN, "mscale": 1.0, "mscale_all_dim": 1.0},  # DeepSeek-V3: factor 1.0
    "yarn-attention-factor": {**YARN, "attention_factor": 0.5},
    "dynamic": {"rope_type": "dynamic", "factor": 4.0},
}


def _shape(scaling, theta: float = 10_000.0, max_positions: int = MAX) -> ModelShape:
    return ModelShape(
        vocab_size=32,
        hidden_size=64,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        head_dim=128,
        intermediate_size=32,
        max_position_embeddings=max_positions,
        rope_theta=theta,
        rope_scaling=copy.deepcopy(scaling),
    )


def _config(head_dim: int, shape: ModelShape):
    return transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=64,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        rope_theta=shape.rope_theta,
        rope_scaling=copy.deepcopy(shape.rope_scaling),  # transformers edits it in place
    )


def _reference(head_dim: int, shape: ModelShape, seq_len=None) -> tuple[torch.Tensor, float]:
    config = _config(head_dim, shape)
    kind = config.rope_parameters["rope_type"]
    if kind == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[kind](config, None, seq_len=seq_len)


def _assert_same(ours: tuple[torch.Tensor, float], theirs: tuple[torch.Tensor, float]) -> None:
    assert ours[0].dtype == torch.float32
    assert torch.equal(ours[0], theirs[0]), (ours[0] - theirs[0]).abs().max()
    assert ours[1] == theirs[1]


@pytest.mark.parametrize("theta", [10_000.0, 500_000.0])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("name", SCALINGS)
def test_same_frequencies_as_transformers(name, head_dim, theta):
    shape = _shape(SCALINGS[name], theta)
    ours = frequencies(head_dim, shape)
    assert ours[0].shape == (head_dim // 2,)
    _assert_same(ours, _reference(head_dim, shape))


# (theta, max_position_embeddings, rope_scaling) as real checkpoints have them
REAL = {
    "llama-3.1": (
        500_000.0,
        131_072,
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    ),
    "qwen2.5-yarn": (1_000_000.0, 131_072, {**YARN, "original_max_position_embeddings": 32_768}),
    "deepseek-yarn": (
        10_000.0,
        163_840,
        {
            **YARN,
            "factor": 40.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "beta_fast": 32,
            "beta_slow": 1,
            "original_max_position_embeddings": 4096,
        },
    ),
    "linear": (10_000.0, 16_384, {"rope_type": "linear", "factor": 4.0}),
}


@pytest.mark.parametrize("head_dim", [128, 96, 64, 32])
@pytest.mark.parametrize("name", REAL)
def test_same_frequencies_as_transformers_for_real_settings(name, head_dim):
    theta, max_positions, scaling = REAL[name]
    shape = _shape(scaling, theta, max_positions)
    _assert_same(frequencies(head_dim, shape), _reference(head_dim, shape))


@pytest.mark.parametrize("head_dim", [128, 64])
@pytest.mark.parametrize("seq_len", [4096, 4097, 6000, 32_768])
def test_dynamic_real_settings(head_dim, seq_len):
    shape = _shape({"rope_type": "dynamic", "factor": 2.0}, 10_000.0, 4096)
    reference = _reference(head_dim, shape, torch.tensor(seq_len) if seq_len > 4096 else None)
    _assert_same(frequencies(head_dim, shape, seq_len), reference)


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("seq_len", [1, MAX - 1, MAX, MAX + 1, 3 * MAX, 10 * MAX + 7])
def test_dynamic_as_transformers_computes_it_in_forward(head_dim, seq_len):
    shape = _shape(SCALINGS["dynamic"], 500_000.0)
    # transformers passes max(position_ids) + 1 as a tensor, and recomputes only beyond the original length
    reference = _reference(head_dim, shape, torch.tensor(seq_len) if seq_len > MAX else None)
    _assert_same(frequencies(head_dim, shape, seq_len), reference)
    if seq_len <= MAX:
        _assert_same(frequencies(head_dim, shape, seq_len), frequencies(head_dim, shape))


@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_dynamic_python_int_seq_len_is_within_float32_rounding(head_dim):
    # with a Python int, transformers computes the new theta in float64: the same up to an ulp
    shape = _shape(SCALINGS["dynamic"])
    for seq_len in (MAX + 1, 3 * MAX, 5 * MAX + 3):
        theirs, _ = _reference(head_dim, shape, seq_len)
        torch.testing.assert_close(frequencies(head_dim, shape, seq_len)[0], theirs, rtol=2e-7, atol=0)


def test_dynamic_follows_transformers_module_through_cached_decoding():
    head_dim = 16
    shape = _shape(SCALINGS["dynamic"])
    rope = LlamaRotaryEmbedding(_config(head_dim, shape))
    x = torch.zeros(1)
    # a prefill below the original length, decoding past it one token at a time, then a new short prompt
    calls = [torch.arange(MAX - 3)] + [torch.tensor([p]) for p in range(MAX - 3, MAX + 4)] + [torch.arange(8)]
    for positions in calls:
        rope(x, positions[None])
        inv_freq, factor = frequencies(head_dim, shape, seq_len=int(positions.max()) + 1)
        assert torch.equal(rope.inv_freq, inv_freq)
        assert factor == rope.attention_scaling


def test_frequencies_follow_the_head_dim_argument_not_the_shape():
    shape = _shape(SCALINGS["yarn"])
    assert frequencies(16, shape)[0].shape == (8,)
    assert not torch.equal(frequencies(128, shape)[0][::8], frequencies(16, shape)[0])  # yarn's ramp moves
    plain = _shape(None)
    assert torch.equal(frequencies(128, plain)[0][::8], frequencies(16, plain)[0])


def test_is_dynamic():
    assert is_dynamic(_shape(SCALINGS["dynamic"]))
    assert is_dynamic(_shape({"type": "dynamic", "factor": 2.0}))
    assert not any(is_dynamic(_shape(SCALINGS[name])) for name in ("none", "linear", "llama3", "yarn"))


def test_every_rope_type_is_covered():
    covered = {(s or {}).get("rope_type", (s or {}).get("type", "default")) for s in SCALINGS.values()}
    assert covered == set(ROPE_TYPES)


def test_unsupported_settings_are_refused():
    longrope = ModelShape.model_construct(
        **{**_shape(None).model_dump(), "rope_scaling": {"rope_type": "longrope"}}
    )
    with pytest.raises(ValueError, match="longrope"):
        frequencies(16, longrope)
    partial = _shape({"rope_type": "default", "partial_rotary_factor": 0.5})
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        frequencies(16, partial)
