"""The operator catalog as torch modules: what the profiler times and the trainer distils.

Every operator maps a block's residual stream x (batch, tokens, hidden) to the sublayer's output f(x);
the block adds it back (x + f(x)), so identity is f(x) = 0 and the teacher's sublayer is the attention
or MLP operator with the teacher's sizes. Attention keeps a KV cache for decoding.
"""

import torch
import torch.nn.functional as F
from torch import nn

from shared.rope import frequencies, is_dynamic
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


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """RMSNorm, then causal GQA attention with RoPE (the Hugging Face Llama layout), with the family's
    traits: q/k/v biases (Qwen2), per-head q/k RMSNorm before RoPE (Qwen3), a sliding window (Mistral)."""

    def __init__(self, spec: AttentionOp, shape: ModelShape):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        hidden, bias = shape.hidden_size, shape.attention_bias
        self.norm = nn.RMSNorm(hidden, eps=shape.rms_norm_eps)
        self.q_proj = nn.Linear(hidden, spec.num_heads * spec.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, spec.num_kv_heads * spec.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, spec.num_kv_heads * spec.head_dim, bias=bias)
        self.o_proj = nn.Linear(spec.num_heads * spec.head_dim, hidden, bias=False)
        if shape.qk_norm:
            self.q_norm = nn.RMSNorm(spec.head_dim, eps=shape.rms_norm_eps)
            self.k_norm = nn.RMSNorm(spec.head_dim, eps=shape.rms_norm_eps)
        self.shape = shape
        self.window = shape.sliding_window
        self.register_buffer("inv_freq", torch.empty(spec.head_dim // 2), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """Recompute what is derived rather than stored (after loading weights onto a meta-built module)."""
        inv_freq, self.rope_factor = frequencies(self.head_dim, self.shape)
        self.inv_freq = inv_freq.to(self.inv_freq.device)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        w = self.k_proj.weight
        return KVCache(batch, self.num_kv_heads, max_len, self.head_dim, dtype=w.dtype, device=w.device)

    def _rotation(self, start: int, tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of positions start .. start + tokens - 1."""
        inv_freq, factor = self.inv_freq, self.rope_factor
        if is_dynamic(self.shape):  # NTK-aware scaling grows with the sequence, as transformers' does
            inv_freq, factor = frequencies(self.head_dim, self.shape, seq_len=start + tokens)
            inv_freq = inv_freq.to(device)
        positions = torch.arange(start, start + tokens, device=device, dtype=torch.float32)
        freqs = torch.outer(positions, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * factor, emb.sin() * factor

    def _mask(self, start: int, tokens: int, device) -> torch.Tensor | None:
        """Which cached and new positions each new token sees (None: plain causal, or all of the cache)."""
        total = start + tokens
        # an exported graph serves every length: it keeps the window's mask even where it does nothing
        if self.window is not None and (total > self.window or torch.compiler.is_exporting()):
            query = torch.arange(start, total, device=device)[:, None]
            key = torch.arange(total, device=device)[None, :]
            return (key <= query) & (query - key < self.window)
        if start and tokens > 1:  # new tokens see the whole cache and each other causally
            return torch.ones(tokens, total, dtype=torch.bool, device=device).tril(start)
        return None

    def _qkv(self, x: torch.Tensor, start) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of x, each (batch, heads, tokens, head_dim), the queries and keys
        rotated for positions start .. start + tokens - 1 (start: an int, or a symbolic size in export)."""
        batch, tokens, _ = x.shape
        h = self.norm(x)
        q = self.q_proj(h).view(batch, tokens, self.num_heads, self.head_dim)
        k = self.k_proj(h).view(batch, tokens, self.num_kv_heads, self.head_dim)
        v = self.v_proj(h).view(batch, tokens, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.shape.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        cos, sin = (t.to(q.dtype) for t in self._rotation(start, tokens, x.device))
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        return q, k, v

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        """Attention of the queries over the keys and values, through o_proj: (batch, tokens, hidden)."""
        batch, _, tokens, _ = q.shape
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=self.num_heads != self.num_kv_heads
        )
        return self.o_proj(y.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        tokens = x.shape[1]
        start = cache.length if cache is not None else 0
        q, k, v = self._qkv(x, start)
        if cache is not None:
            k, v = cache.append(k, v)
        mask = self._mask(start, tokens, x.device)
        # is_causal: a Python bool, also when tokens is symbolic
        return self._attend(q, k, v, mask, is_causal=mask is None and start == 0)

    def forward_past(
        self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """forward with the cache as tensors, for an exported graph: past keys and values (batch,
        kv_heads, past, head_dim) in; f(x) and the keys and values of past and x (past + tokens along
        axis 2) out. x's positions start at past. The mask is computed from positions, never chosen by
        Python on the sizes, so one traced graph serves every past (0 too) and every token count."""
        tokens, past = x.shape[1], past_k.shape[2]
        q, k, v = self._qkv(x, past)
        k, v = torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2)
        query = torch.arange(past, past + tokens, device=x.device)[:, None]
        key = torch.arange(past + tokens, device=x.device)[None, :]
        mask = key <= query
        if self.window is not None:
            mask = mask & (query - key < self.window)
        return self._attend(q, k, v, mask, is_causal=False), k, v


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
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.RMSNorm):
            nn.init.ones_(m.weight)


def build_operator(spec: OperatorSpec, shape: ModelShape) -> nn.Module:
    """The module for one operator spec on one model shape, initialised like Llama."""
    module = MODULES[spec.kind](spec, shape)
    init_weights(module)
    return module
