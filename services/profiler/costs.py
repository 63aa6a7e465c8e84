"""What is known about one call's cost without timing it, under a LUT key: shared/costs.py's formulas
at the key's regime, batch and dtype.

Weight and KV-cache bytes are exact. Activation bytes are computed here only where the device has no
allocator to ask (CPU). FLOPs give the rough call times that keep absurd requests from starting.
"""

from shared.costs import (
    activations_per_token,
    cached_tokens,
    fixed_parameters,
    kv_bytes_per_token,
    operator_flops,
    operator_parameters,
)
from shared.schemas.lut import DTYPE_BYTES, Costs, LutKey
from shared.schemas.operators import OperatorSpec


def tokens(key: LutKey) -> tuple[int, int]:
    """(new tokens per call, tokens already in the KV cache) for the key's regime."""
    return (key.length, 0) if key.regime == "prefill" else (1, key.length)


def static_costs(spec: OperatorSpec, key: LutKey, *, latency_ms: float, activation_bytes: int) -> Costs:
    dtype_bytes = DTYPE_BYTES[key.dtype]
    params = operator_parameters(spec, key.shape)
    return Costs(
        latency_ms=latency_ms,
        params=params,
        weight_bytes=params * dtype_bytes,
        kv_bytes_per_token=kv_bytes_per_token(spec, dtype_bytes),
        activation_bytes=activation_bytes,
    )


def fixed_costs(key: LutKey, *, latency_ms: float, activation_bytes: int) -> Costs:
    params = fixed_parameters(key.shape)
    return Costs(
        latency_ms=latency_ms,
        params=params,
        weight_bytes=params * DTYPE_BYTES[key.dtype],
        kv_bytes_per_token=0,
        activation_bytes=activation_bytes,
    )


def computed_activation_bytes(spec: OperatorSpec | None, key: LutKey) -> int:
    """Intermediates of one call (spec None: the fixed part)."""
    new, _ = tokens(key)
    return key.batch * new * activations_per_token(spec, key.shape) * DTYPE_BYTES[key.dtype]


def flops(spec: OperatorSpec | None, key: LutKey) -> float:
    """Multiply-adds x 2 of one call (spec None: the fixed part)."""
    new, cached = tokens(key)
    return operator_flops(
        spec, key.shape, rows=key.batch * new, attended=cached_tokens(key.shape, cached + new)
    )
