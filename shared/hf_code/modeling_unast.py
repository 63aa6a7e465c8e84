"""A UNAST-compressed decoder for transformers: `AutoModelForCausalLM.from_pretrained(dir,
trust_remote_code=True)` loads an export offline, computes the logits the project's own model does
(shared/operators.py, shared/model.py; this file repeats them because it must run without the project)
and generates with a KV cache.

Each block has an attention slot and an MLP slot, each a pre-norm sublayer with a residual around it:
identity (skipped, no weights), linear (RMSNorm, one hidden x hidden matrix), GQA attention with RoPE of
its own sizes, or a SwiGLU MLP of its own width. Weights keep Hugging Face Llama names; a linear slot's
matrix is `self_attn.linear_attn` / `mlp.linear_mlp` (the DeciLM names).
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, LlamaConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from .configuration_unast import UnastConfig

# what transformers calls the KV cache in its outputs (`cache` from 5.24, `past_key_values` before)
CACHE_FIELD = (
    "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"
)


def rope_frequencies(
    config: UnastConfig, head_dim: int, seq_len: int | None = None
) -> tuple[torch.Tensor, float]:
    """(inverse frequencies, attention factor) for a head size, by transformers' own RoPE functions."""
    scaling = config.rope_settings or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype=torch.float) / head_dim
        return 1.0 / (config.rope_theta**exponents), 1.0
    if "rope_parameters" in getattr(LlamaConfig, "__dataclass_fields__", {}):  # transformers >= 5
        rope = {"rope_parameters": {**scaling, "rope_type": rope_type, "rope_theta": config.rope_theta}}
    else:
        rope = {"rope_scaling": dict(scaling), "rope_theta": config.rope_theta}
    per_head = LlamaConfig(
        hidden_size=head_dim,
        num_attention_heads=1,
        head_dim=head_dim,
        max_position_embeddings=config.max_position_embeddings,
        **rope,
    )
    if rope_type == "dynamic":  # transformers' forward passes the length as a tensor
        seq_len = torch.tensor(seq_len or 0, dtype=torch.float32)
    return ROPE_INIT_FUNCTIONS[rope_type](per_head, None, seq_len=seq_len)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class UnastAttention(nn.Module):
    def __init__(self, config: UnastConfig, spec: dict, cache_index: int):
        super().__init__()
        hidden, bias = config.hidden_size, config.attention_bias
        self.num_heads, self.num_kv_heads, self.head_dim = (
            spec["num_heads"],
            spec["num_kv_heads"],
            spec["head_dim"],
        )
        self.cache_index = cache_index  # its place among the blocks that keep a KV cache
        self.frequencies = None  # RoPE's, computed once (derived, not a weight)
        self.config = config
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)
        if config.qk_norm:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = nn.RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def rotation(self, positions: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        scaling = self.config.rope_settings or {}
        if scaling.get("rope_type", scaling.get("type")) == "dynamic":  # grows with the sequence
            inv_freq, factor = rope_frequencies(self.config, self.head_dim, seq_len)
        else:
            if self.frequencies is None:
                self.frequencies = rope_frequencies(self.config, self.head_dim)
            inv_freq, factor = self.frequencies
        freqs = positions.float()[..., None] * inv_freq.to(positions.device)  # (batch, tokens, dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # broadcast over heads
        return emb.cos() * factor, emb.sin() * factor

    def forward(self, h, positions, mask, cache):
        batch, tokens, _ = h.shape
        q = self.q_proj(h).view(batch, tokens, self.num_heads, self.head_dim)
        k = self.k_proj(h).view(batch, tokens, self.num_kv_heads, self.head_dim)
        v = self.v_proj(h).view(batch, tokens, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.config.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        cos, sin = (t.to(q.dtype) for t in self.rotation(positions, int(positions.max()) + 1))
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(k, v, self.cache_index)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=self.num_heads != self.num_kv_heads
        )
        return self.o_proj(y.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim))


class UnastMLP(nn.Module):
    def __init__(self, config: UnastConfig, spec: dict):
        super().__init__()
        width = spec["intermediate_size"]
        self.gate_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=False)

    def forward(self, h):
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class UnastDecoderLayer(nn.Module):
    """One block: its attention slot (under self_attn) and its MLP slot (under mlp), each with its norm."""

    def __init__(self, config: UnastConfig, block: dict, cache_index: int):
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        self.attention_kind, self.mlp_kind = block["attention"]["kind"], block["mlp"]["kind"]
        if self.attention_kind != "identity":
            self.input_layernorm = nn.RMSNorm(hidden, eps=eps)
            self.self_attn = nn.Module()
            if self.attention_kind == "linear":
                self.self_attn.linear_attn = nn.Linear(hidden, hidden, bias=False)
            else:
                self.self_attn = UnastAttention(config, block["attention"], cache_index)
        if self.mlp_kind != "identity":
            self.post_attention_layernorm = nn.RMSNorm(hidden, eps=eps)
            self.mlp = nn.Module()
            if self.mlp_kind == "linear":
                self.mlp.linear_mlp = nn.Linear(hidden, hidden, bias=False)
            else:
                self.mlp = UnastMLP(config, block["mlp"])

    def forward(self, x, positions, mask, cache):
        if self.attention_kind == "linear":
            x = x + self.self_attn.linear_attn(self.input_layernorm(x))
        elif self.attention_kind == "attention":
            x = x + self.self_attn(self.input_layernorm(x), positions, mask, cache)
        if self.mlp_kind == "linear":
            x = x + self.mlp.linear_mlp(self.post_attention_layernorm(x))
        elif self.mlp_kind == "mlp":
            x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class UnastPreTrainedModel(PreTrainedModel):
    config_class = UnastConfig
    base_model_prefix = "model"
    _no_split_modules = ["UnastDecoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):
            nn.init.ones_(module.weight)


class UnastModel(UnastPreTrainedModel):
    def __init__(self, config: UnastConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        layers, cached = [], 0
        for block in config.unast_blocks:
            layers.append(UnastDecoderLayer(config, block, cached))
            cached += block["attention"]["kind"] == "attention"
        self.layers = nn.ModuleList(layers)
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def attention_mask(
        self, past: int, tokens: int, padding: torch.Tensor | None, device
    ) -> torch.Tensor | None:
        """Which cached and new positions each new token sees: causal, within the window, not padding
        (None: plainly causal over the new tokens)."""
        total, window = past + tokens, self.config.attention_window
        if padding is None and past == 0 and (window is None or total <= window):
            return None
        query = torch.arange(past, total, device=device)[:, None]
        key = torch.arange(total, device=device)[None, :]
        mask = key <= query
        if window is not None:
            mask = mask & (query - key < window)
        mask = mask[None, None]
        if padding is not None:
            mask = mask & padding[:, None, None, :total].bool()
        return mask

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ):
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        batch, tokens = x.shape[:2]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + tokens, device=x.device)[None].expand(batch, -1)
        padding = None if attention_mask is None or bool(attention_mask.all()) else attention_mask
        mask = self.attention_mask(past, tokens, padding, x.device)
        for layer in self.layers:
            x = layer(x, position_ids, mask, cache)
        return self.norm(x), cache


class UnastForCausalLM(UnastPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: UnastConfig):
        super().__init__(config)
        self.model = UnastModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        past_key_values=None,
        **kwargs,
    ):
        hidden, cache = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,  # transformers < 5.24's name
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        loss = None
        if labels is not None:
            shifted = logits[:, :-1].flatten(0, 1).float()
            loss = F.cross_entropy(shifted, labels[:, 1:].flatten().to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache})


__all__ = ["UnastForCausalLM", "UnastModel", "UnastPreTrainedModel", "rope_frequencies"]
