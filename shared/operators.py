"""The operator catalog as torch modules: what the profiler times and the trainer distils.

Every operator maps a block's residual stream x (batch, tokens, hidden) to the sublayer's output f(x);
the block adds it back (x + f(x)), so identity is f(x) = 0 and the teacher's sublayer is the attention
or MLP operator with the teacher's sizes. Attention keeps a KV cache for decoding.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from shared.schemas.operators import AttentionOp, IdentityOp, LinearOp, MLPOp, OperatorSpec
from shared.schemas.shape import ModelShape


class KVCache:
    """Keys and values of one attention operator, preallocated for max_len tokens."""

    def __init__(self, batch: int, num_kv_heads: int, max_len: int, head_dim: int, *, dtype, device):
        self.k = torch.zeros(batch, num_kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys/values; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache holds {self.k.shape[2]} tokens, {end} requested")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


def rope_inv_freq(head_dim: int, shape: ModelShape) -> torch.Tensor:
    """RoPE inverse frequencies, with Llama 3 scaling when the shape asks for it."""
    inv_freq = 1.0 / (shape.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    scaling = shape.rope_scaling or {}
    if scaling.get("rope_type", scaling.get("type")) != "llama3":
        return inv_freq.float()
    # Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    is_medium = (wavelen <= old_len / low) & (wavelen >= old_len / high)
    return torch.where(is_medium, blended, scaled).float()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """RMSNorm, then causal GQA attention with RoPE (the Hugging Face Llama layout)."""

    def __init__(self, spec: AttentionOp, shape: ModelShape):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        hidden = shape.hidden_size
        self.norm = nn.RMSNorm(hidden, eps=shape.rms_norm_eps)
        self.q_proj = nn.Linear(hidden, spec.num_heads * spec.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, spec.num_kv_heads * spec.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, spec.num_kv_heads * spec.head_dim, bias=False)
        self.o_proj = nn.Linear(spec.num_heads * spec.head_dim, hidden, bias=False)
        self.shape = shape
        self.register_buffer("inv_freq", torch.empty(spec.head_dim // 2), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """Recompute what is derived rather than stored (after loading weights onto a meta-built module)."""
        self.inv_freq = rope_inv_freq(self.head_dim, self.shape).to(self.inv_freq.device)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        w = self.k_proj.weight
        return KVCache(batch, self.num_kv_heads, max_len, self.head_dim, dtype=w.dtype, device=w.device)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        batch, tokens, _ = x.shape
        h = self.norm(x)
        q = self.q_proj(h).view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(batch, tokens, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(batch, tokens, self.num_kv_heads, self.head_dim).transpose(1, 2)
        start = cache.length if cache is not None else 0
        positions = torch.arange(start, start + tokens, device=x.device, dtype=torch.float32)
        freqs = torch.outer(positions, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = cache.append(k, v)
        mask = None
        if start and tokens > 1:  # new tokens see the whole cache and each other causally
            mask = torch.ones(tokens, start + tokens, dtype=torch.bool, device=x.device).tril(start)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=start == 0,  # a Python bool, also when tokens is symbolic (torch.export)
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        return self.o_proj(y.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))


class MLP(nn.Module):
    """RMSNorm, then SwiGLU: down(silu(gate(h)) * up(h))."""

    def __init__(self, spec: MLPOp, shape: ModelShape):
        super().__init__()
        hidden = shape.hidden_size
        self.norm = nn.RMSNorm(hidden, eps=shape.rms_norm_eps)
        self.gate_proj = nn.Linear(hidden, spec.intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden, spec.intermediate_size, bias=False)
        self.down_proj = nn.Linear(spec.intermediate_size, hidden, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        h = self.norm(x)
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Linear(nn.Module):
    """RMSNorm, then one hidden x hidden linear layer."""

    def __init__(self, spec: LinearOp, shape: ModelShape):
        super().__init__()
        self.norm = nn.RMSNorm(shape.hidden_size, eps=shape.rms_norm_eps)
        self.proj = nn.Linear(shape.hidden_size, shape.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return self.proj(self.norm(x))


class Identity(nn.Module):
    """The skipped sublayer: contributes nothing (blocks skip it rather than add zeros)."""

    def __init__(self, spec: IdentityOp, shape: ModelShape):
        super().__init__()

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        return torch.zeros_like(x)


MODULES: dict[str, type[nn.Module]] = {
    "identity": Identity,
    "linear": Linear,
    "attention": Attention,
    "mlp": MLP,
}


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Llama's initialisation: normal(0, 0.02) linear and embedding weights, unit norm weights."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=std)
        elif isinstance(m, nn.RMSNorm):
            nn.init.ones_(m.weight)


def build_operator(spec: OperatorSpec, shape: ModelShape) -> nn.Module:
    """The module for one operator spec on one model shape, initialised like Llama."""
    module = MODULES[spec.kind](spec, shape)
    init_weights(module)
    return module
