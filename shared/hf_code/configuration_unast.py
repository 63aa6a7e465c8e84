"""Configuration of a UNAST-compressed decoder: a Llama-family model whose blocks differ.

Shipped with every compressed export so that `AutoConfig.from_pretrained(dir, trust_remote_code=True)`
reads it offline. Per block (`unast_blocks`), the attention slot is `identity`, `linear` or `attention`
(its own query heads, KV heads and head size) and the MLP slot `identity`, `linear` or `mlp` (its own
width). `num_attention_heads`, `num_key_value_heads`, `head_dim` and `intermediate_size` are per-block
lists (0 where a slot has none), so a plain Llama loader refuses this config instead of filling the
blocks it cannot read with random weights. The family's traits: q/k/v biases (Qwen2), per-head q/k
RMSNorm (Qwen3), a sliding window (Mistral: `attention_window`).
"""

from transformers import PretrainedConfig

PER_BLOCK = ("num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")


class UnastConfig(PretrainedConfig):
    model_type = "unast"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        num_hidden_layers: int = 1,
        max_position_embeddings: int = 2048,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        rope_scaling: dict | None = None,
        attention_bias: bool = False,
        qk_norm: bool = False,
        attention_window: int | None = None,
        unast_blocks: list | None = None,
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.rope_settings = rope_scaling  # as config.json's rope_scaling (transformers 5 renames that)
        self.attention_bias = attention_bias
        self.qk_norm = qk_norm
        self.attention_window = attention_window
        self.unast_blocks = unast_blocks or []
        self.hidden_act = "silu"
        self.use_cache = kwargs.pop("use_cache", True)
        # kept aside: transformers' own checks read these names as one size for every block
        self.per_block = {name: kwargs.pop(name, None) for name in PER_BLOCK}
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def to_dict(self) -> dict:
        """As config.json has it: the per-block sizes under their usual names (see the docstring)."""
        config = super().to_dict()
        config["rope_scaling"] = config.pop("rope_settings", None)
        config.pop("per_block", None)
        return config | {k: v for k, v in self.per_block.items() if v is not None}
