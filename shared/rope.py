"""RoPE inverse frequencies of each rope type, as Hugging Face transformers (5.x, modeling_rope_utils)
computes them, for any head size.

Every expression repeats transformers' own, in float32 on the CPU (where a transformers model computes
them when it is built; so did Meta's Llama code), so the frequencies are the same bits, not just close:
a float64 computation rounded to float32 differs from them by up to ~4e-7 relative.

The head size is an argument, not shape.head_dim: a candidate with fewer channels per head rotates them
with the teacher's theta and scaling, as transformers would for a config of that head_dim.
"""

import math

import torch

from shared.schemas.shape import ModelShape, rope_type

ROPE_TYPES = ("default", "llama3", "linear", "dynamic", "yarn")


def is_dynamic(shape: ModelShape) -> bool:
    """Whether the frequencies depend on the sequence length (dynamic NTK), so are computed per call."""
    return rope_type(shape.rope_scaling) == "dynamic"


def _inverse(head_dim: int, theta: float | torch.Tensor) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def frequencies(head_dim: int, shape: ModelShape, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """(inv_freq, attention_factor): float32 tensor of head_dim // 2 inverse frequencies, and the factor
    cos and sin are multiplied by (1.0 except yarn). seq_len matters only for 'dynamic' (the largest
    position + 1 of the call; <= original max positions means the default frequencies)."""
    scaling = shape.rope_scaling or {}
    kind, theta = rope_type(scaling), shape.rope_theta
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope type {kind!r} is not supported ({', '.join(ROPE_TYPES)})")
    if scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial_rotary_factor is not supported (RoPE on every channel)")
    inv_freq = _inverse(head_dim, theta)
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":  # positions divided by factor, i.e. the frequencies
        return inv_freq / scaling["factor"], 1.0
    if kind == "dynamic":
        return _dynamic(head_dim, theta, scaling["factor"], shape.max_position_embeddings, seq_len), 1.0
    # llama3 and yarn: the pretraining length defaults to max_position_embeddings (standardize_rope_params)
    original = scaling.get("original_max_position_embeddings", shape.max_position_embeddings)
    if kind == "llama3":
        return _llama3(inv_freq, scaling, original), 1.0
    return _yarn(head_dim, theta, scaling, original, shape.max_position_embeddings)


def _dynamic(head_dim: int, theta: float, factor: float, original: int, seq_len: int | None) -> torch.Tensor:
    """NTK-aware: a larger theta once the sequence outgrows max_position_embeddings (transformers'
    original length for dynamic, even if an original_max_position_embeddings key is there)."""
    if seq_len is None or seq_len <= original:  # the frequencies a transformers model is built with
        return _inverse(head_dim, theta)
    # transformers recomputes them in forward with seq_len = max(position_ids) + 1, a 0-d int64 tensor,
    # so the new theta is computed in float32, not in Python floats
    length = torch.tensor(seq_len)
    theta = theta * ((factor * length / original) - (factor - 1)) ** (head_dim / (head_dim - 2))
    return _inverse(head_dim, theta)


def _llama3(inv_freq: torch.Tensor, scaling: dict, original: int) -> torch.Tensor:
    """Llama 3.1: keep high frequencies, divide low ones by factor, blend the ones in between."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < original / high) * ~(wavelen > original / low)
    return torch.where(is_medium, blended, scaled)


def _yarn(
    head_dim: int, theta: float, scaling: dict, original: int, max_positions: int
) -> tuple[torch.Tensor, float]:
    """YaRN: interpolate low frequencies, keep high ones, ramp between; scale cos and sin up."""
    factor = scaling.get("factor")
    if factor is None:  # DeepSeek-style configs give the lengths instead
        factor = max_positions / original

    def mscale(scale: float, m: float = 1) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:  # the dimension that turns `rotations` times
        return (head_dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low = correction_dim(scaling.get("beta_fast") or 32)
    high = correction_dim(scaling.get("beta_slow") or 1)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # no division by zero
    ramp = torch.clamp((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    keep = 1 - ramp  # 1: extrapolate (keep the frequency), 0: interpolate (divide it by factor)
    pos_freqs = theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep
    return inv_freq, float(attention_factor)
