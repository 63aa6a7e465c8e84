"""Configuration of a UNAST-compressed decoder: a Llama-family model whose blocks differ.

Shipped with every compressed export so that `AutoConfig.from_pretrained(dir, trust_remote_code=True)`
reads it offline. Per block (`unast_blocks`), the attention slot is `identity`, `linear` or `attention`
(its own query heads, KV heads and head size) and the MLP slot `identity`, `linear` or `mlp` (its own
width). `num_attention_heads`, `num_key_value_heads`, `head_dim` and `intermediate_size` are per-block
lists (0 where a slot has none), so a plain Llama loader refuses this config instead of filling the
blocks it cannot read with random weights. The family's traits: q/k/v biases (Qwen2), per-head q/k
RMSNorm (Qwen3), a sliding window (Mistral: `attention_window`).

The same class reads the DeciLM / Nemotron-NAS form (`block_configs`, `model_type: nemotron-nas`) that
a servable export's `nemotron-nas/` folder holds, so transformers loads that folder offline too.
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
        self.hidden_act = "silu"
        self.use_cache = kwargs.pop("use_cache", True)
        # kept aside as given: transformers' own checks read these names as one size for every block
        self.per_block = {name: kwargs.pop(name) for name in PER_BLOCK if name in kwargs}
        if "block_configs" in kwargs:  # the DeciLM / Nemotron-NAS form, read by attribute as its readers do
            self.block_configs = [Fields(entry) for entry in kwargs.pop("block_configs")]
            heads = self.per_block["num_attention_heads"]
            unast_blocks = [_from_block_config(entry, hidden_size, heads) for entry in self.block_configs]
        self.unast_blocks = unast_blocks or []
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def to_dict(self) -> dict:
        """As config.json has it: the per-block sizes under their usual names (see the docstring)."""
        config = super().to_dict()
        config["rope_scaling"] = config.pop("rope_settings", None)
        config.pop("per_block", None)
        return config | self.per_block


class Fields(dict):
    """A block_configs entry that reads by attribute too (entry.attention.no_op), as the form's readers
    (NVIDIA's dataclasses, vLLM) do, and writes as the plain JSON object it came from."""

    def __init__(self, entry: dict):
        super().__init__({k: Fields(v) if isinstance(v, dict) else v for k, v in entry.items()})

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _from_block_config(entry: dict, hidden_size: int, num_heads: int) -> dict:
    """One block_configs entry as a unast block: the form keeps the model's query heads and head size;
    KV heads are heads // n_heads_in_group; an MLP's width is ffn_mult rounded up to a multiple of 256."""
    attention, ffn = entry["attention"], entry["ffn"]
    if attention.get("no_op"):
        attn = {"kind": "identity"}
    elif attention.get("replace_with_linear"):
        attn = {"kind": "linear"}
    else:
        kv_heads = num_heads // attention["n_heads_in_group"]
        attn = {"kind": "attention", "num_heads": num_heads, "num_kv_heads": kv_heads}
        attn["head_dim"] = hidden_size // num_heads
    if ffn.get("no_op"):
        mlp = {"kind": "identity"}
    elif ffn.get("replace_with_linear"):
        mlp = {"kind": "linear"}
    else:
        width = int(2 * ffn["ffn_mult"] * hidden_size / 3)
        mlp = {"kind": "mlp", "intermediate_size": width + (-width) % 256}
    return {"attention": attn, "mlp": mlp}
