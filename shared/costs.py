"""What a model costs, from its shapes alone: parameters, weight and KV-cache bytes, FLOPs, activations,
and the memory a trainer job on it takes. No torch, so that every service counts with these functions:
the profiler's LUTs, limits and estimates (and through them the report), the trainer's memory check
and its results' parameter counts.

The counts follow shared/model.py exactly: every operator but identity has its own RMSNorm (Hugging
Face's input_layernorm / post_attention_layernorm); the fixed part is the embedding, the final norm
and the LM head, one matrix with the embedding when they are tied; an identity slot holds nothing.
"""

from shared.schemas.operators import Architecture, AttentionOp, LinearOp, MLPOp, OperatorSpec
from shared.schemas.shape import ModelShape

MEMORY_SHARE = 0.8  # of a device's memory a job may plan to use; the rest is the system's
FLOAT_BYTES = 4  # the trainer holds weights, gradients, optimizer state and activations in float32
LOGIT_COPIES = 3  # a training step holds the logits, their log-softmax and their gradient


def operator_parameters(spec: OperatorSpec, shape: ModelShape) -> int:
    """The operator's weights, its norm included."""
    h = shape.hidden_size
    match spec:
        case AttentionOp():
            q_and_o = 2 * h * spec.num_heads * spec.head_dim
            k_and_v = 2 * h * spec.num_kv_heads * spec.head_dim
            biases = (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim if shape.attention_bias else 0
            qk_norms = 2 * spec.head_dim if shape.qk_norm else 0
            return h + q_and_o + k_and_v + biases + qk_norms
        case MLPOp():
            return h + 3 * h * spec.intermediate_size
        case LinearOp():
            return h + h * h
        case _:
            return 0


def fixed_parameters(shape: ModelShape) -> int:
    """Embedding, final norm and LM head (one matrix when they are tied)."""
    matrices = 1 if shape.tie_word_embeddings else 2
    return matrices * shape.vocab_size * shape.hidden_size + shape.hidden_size


def parameters(architecture: Architecture, shape: ModelShape) -> int:
    """A whole model's distinct parameters (tied ones once): the fixed part plus every slot's operator.
    ValueError when the architecture has another depth than the shape."""
    architecture.check_shape(shape)
    slots = sum(operator_parameters(spec, shape) for _, _, spec in architecture.slots())
    return fixed_parameters(shape) + slots


def weight_bytes(spec: OperatorSpec, shape: ModelShape, dtype_bytes: int) -> int:
    return operator_parameters(spec, shape) * dtype_bytes


def fixed_weight_bytes(shape: ModelShape, dtype_bytes: int) -> int:
    return fixed_parameters(shape) * dtype_bytes


def kv_bytes_per_token(spec: OperatorSpec, dtype_bytes: int) -> int:
    """KV-cache bytes one token adds (per sequence) for this operator."""
    if isinstance(spec, AttentionOp):
        return 2 * spec.num_kv_heads * spec.head_dim * dtype_bytes
    return 0


def cached_tokens(shape: ModelShape, tokens: int) -> int:
    """The positions a KV cache must keep for a sequence of `tokens`: all, or a sliding window's worth
    (Mistral; serving stacks keep a rolling cache), which is also what each new token attends to."""
    return tokens if shape.sliding_window is None else min(tokens, shape.sliding_window)


def activations_per_token(spec: OperatorSpec | None, shape: ModelShape) -> int:
    """Values one token's call leaves in memory: the sublayer's main intermediates, with a fused attention
    kernel that never materialises the scores matrix (as PyTorch's CPU and CUDA flash kernels do).
    spec None: the fixed part (embedding output, normed state, logits)."""
    h = shape.hidden_size
    match spec:
        case None:
            return 2 * h + shape.vocab_size
        case AttentionOp():
            # normed input, q/k/v, attention output, projected output, residual sum
            return 3 * h + (2 * spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
        case MLPOp():
            # normed input, gate, up, their product, projected output, residual sum
            return 3 * h + 3 * spec.intermediate_size
        case LinearOp():
            return 3 * h
        case _:
            return 0  # identity: the block skips it


def operator_flops(spec: OperatorSpec | None, shape: ModelShape, *, rows: int, attended: int) -> float:
    """Multiply-adds x 2 of one call on `rows` new tokens that each attend to `attended` positions
    (spec None: the fixed part, dominated by the LM head)."""
    h = shape.hidden_size
    match spec:
        case None:
            return 2.0 * rows * h * shape.vocab_size
        case AttentionOp():
            projections = 2.0 * rows * h * (2 * spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
            scores = 4.0 * rows * spec.num_heads * attended * spec.head_dim
            return projections + scores
        case MLPOp():
            return 6.0 * rows * h * spec.intermediate_size
        case LinearOp():
            return 2.0 * rows * h * h
        case _:
            return 0.0


def job_memory_bytes(
    architecture: Architecture, shape: ModelShape, *, batch_size: int, seq_len: int, training: bool
) -> dict[str, int]:
    """The parts of a trainer job's memory, in bytes, for a model of `architecture` made from a teacher
    of `shape`. Rough on purpose: it tells a job that fits from one that cannot by orders of magnitude.

    - weights: the model's, and when training their gradients, AdamW's two moments and the teacher beside;
    - activations: every slot's per token, all kept for the backward pass when training, the largest
      slot's when only evaluating (slots run one at a time);
    - logits: LOGIT_COPIES of batch x seq_len x vocab.
    """
    tokens = batch_size * seq_len
    model = parameters(architecture, shape)
    teacher = parameters(Architecture.teacher(shape), shape)
    per_slot = [activations_per_token(spec, shape) for _, _, spec in architecture.slots()]
    return {
        "weights": (4 * model + teacher if training else model) * FLOAT_BYTES,
        "activations": tokens * (sum(per_slot) if training else max(per_slot)) * FLOAT_BYTES,
        "logits": tokens * shape.vocab_size * LOGIT_COPIES * FLOAT_BYTES,
    }
