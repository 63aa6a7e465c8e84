"""What is known about an operator's cost without timing it: sizes, bytes and FLOPs from its shapes.

Weight and KV-cache bytes are exact. Activation bytes are computed here only where the device has no
allocator to ask (CPU): the sum of the sublayer's main intermediates, assuming a fused attention kernel
that never materialises the scores matrix (as PyTorch's CPU and CUDA flash kernels do). FLOPs give the
rough call times that keep absurd requests from starting.
"""

from shared.operators import kv_bytes_per_token, weight_bytes
from shared.schemas.lut import DTYPE_BYTES, Costs, LutKey
from shared.schemas.operators import AttentionOp, LinearOp, MLPOp, OperatorSpec
from shared.schemas.shape import ModelShape


def tokens(key: LutKey) -> tuple[int, int]:
    """(new tokens per call, tokens already in the KV cache) for the key's regime."""
    return (key.length, 0) if key.regime == "prefill" else (1, key.length)


def static_costs(spec: OperatorSpec, key: LutKey, *, latency_ms: float, activation_bytes: int) -> Costs:
    dtype_bytes = DTYPE_BYTES[key.dtype]
    weights = weight_bytes(spec, key.shape, dtype_bytes)
    return Costs(
        latency_ms=latency_ms,
        params=weights // dtype_bytes,
        weight_bytes=weights,
        kv_bytes_per_token=kv_bytes_per_token(spec, dtype_bytes),
        activation_bytes=activation_bytes,
    )


def fixed_weight_bytes(shape: ModelShape, dtype_bytes: int) -> int:
    """Embedding, final norm and LM head (one matrix when they are tied)."""
    matrices = 1 if shape.tie_word_embeddings else 2
    return (matrices * shape.vocab_size * shape.hidden_size + shape.hidden_size) * dtype_bytes


def fixed_costs(key: LutKey, *, latency_ms: float, activation_bytes: int) -> Costs:
    dtype_bytes = DTYPE_BYTES[key.dtype]
    weights = fixed_weight_bytes(key.shape, dtype_bytes)
    return Costs(
        latency_ms=latency_ms,
        params=weights // dtype_bytes,
        weight_bytes=weights,
        kv_bytes_per_token=0,
        activation_bytes=activation_bytes,
    )


def computed_activation_bytes(spec: OperatorSpec | None, key: LutKey) -> int:
    """Intermediates of one call (spec None: the fixed part -- embedding output, normed state, logits)."""
    new, _ = tokens(key)
    h = key.shape.hidden_size
    match spec:
        case None:
            per_token = 2 * h + key.shape.vocab_size
        case AttentionOp():
            # normed input, q/k/v, attention output, projected output, residual sum
            per_token = 3 * h + (2 * spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
        case MLPOp():
            # normed input, gate, up, their product, projected output, residual sum
            per_token = 3 * h + 3 * spec.intermediate_size
        case LinearOp():
            per_token = 3 * h
        case _:
            per_token = 0  # identity: the block skips it
    return key.batch * new * per_token * DTYPE_BYTES[key.dtype]


def flops(spec: OperatorSpec | None, key: LutKey) -> float:
    """Multiply-adds x 2 of one call (spec None: the fixed part, dominated by the LM head)."""
    new, cached = tokens(key)
    rows = key.batch * new
    h = key.shape.hidden_size
    match spec:
        case None:
            return 2.0 * rows * h * key.shape.vocab_size
        case AttentionOp():
            projections = 2.0 * rows * h * (2 * spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
            attended = cached + new
            scores = 4.0 * rows * spec.num_heads * attended * spec.head_dim
            return projections + scores
        case MLPOp():
            return 6.0 * rows * h * spec.intermediate_size
        case LinearOp():
            return 2.0 * rows * h * h
        case _:
            return 0.0
