"""The shape of a Llama-family teacher model: presets, or read from a Hugging Face config.json."""

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelShape(BaseModel):
    """Sizes of a Llama-family decoder (RMSNorm, RoPE, GQA attention, SwiGLU MLP)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(None, max_length=100, description="Preset or model name, for people.")
    vocab_size: int = Field(ge=2, le=1_048_576)
    hidden_size: int = Field(ge=2, le=65_536)
    num_layers: int = Field(ge=1, le=1024)
    num_heads: int = Field(ge=1, le=1024)
    num_kv_heads: int = Field(ge=1, le=1024)
    head_dim: int = Field(ge=2, le=1024, description="Even: RoPE rotates pairs of channels.")
    intermediate_size: int = Field(ge=1, le=1_048_576)
    max_position_embeddings: int = Field(2048, ge=1, le=10_485_760)
    rope_theta: float = Field(10_000.0, gt=0)
    rope_scaling: dict[str, Any] | None = Field(
        None, description="Hugging Face rope_scaling; None or rope_type 'llama3'."
    )
    rms_norm_eps: float = Field(1e-5, gt=0, lt=1)
    tie_word_embeddings: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")
        rope_type = (self.rope_scaling or {}).get("rope_type", (self.rope_scaling or {}).get("type"))
        if self.rope_scaling is not None and rope_type not in ("default", "llama3"):
            raise ValueError(
                f"rope_scaling type {rope_type!r} is not supported (only 'default' and 'llama3')"
            )
        return self

    @property
    def num_slots(self) -> int:
        return 2 * self.num_layers

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> Self:
        """Read a Hugging Face Llama config.json (a dict), or a DeciLM / Nemotron-NAS one (whose
        blocks vary; shared/decilm.py reads them); refuses other architectures."""
        if config.get("model_type") not in ("llama", "nemotron-nas"):
            raise ValueError(
                f"model_type {config.get('model_type')!r} is not supported (only 'llama' and 'nemotron-nas')"
            )
        if config.get("attention_bias") or config.get("mlp_bias"):
            raise ValueError("attention_bias / mlp_bias are not supported")
        heads = config["num_attention_heads"]
        rope = config.get("rope_parameters") or {}  # transformers >= 5 nests the RoPE settings
        scaling = config.get("rope_scaling")
        if scaling is None and rope.get("rope_type", "default") != "default":
            scaling = rope
        return cls(
            name=config.get("_name_or_path") or None,
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            intermediate_size=config["intermediate_size"],
            max_position_embeddings=config.get("max_position_embeddings", 2048),
            rope_theta=config.get("rope_theta", rope.get("rope_theta", 10_000.0)),
            rope_scaling=scaling,
            rms_norm_eps=config.get("rms_norm_eps", 1e-5),
            tie_word_embeddings=config.get("tie_word_embeddings", False),
        )

    def to_hf_config(self) -> dict[str, Any]:
        """A Hugging Face LlamaForCausalLM config.json for this shape."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "torch_dtype": "float32",
        }


PRESETS: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape(
            name="llama2-7b",
            vocab_size=32_000,
            hidden_size=4096,
            num_layers=32,
            num_heads=32,
            num_kv_heads=32,
            head_dim=128,
            intermediate_size=11_008,
            max_position_embeddings=4096,
        ),
        ModelShape(
            name="llama3-8b",
            vocab_size=128_256,
            hidden_size=4096,
            num_layers=32,
            num_heads=32,
            num_kv_heads=8,
            head_dim=128,
            intermediate_size=14_336,
            max_position_embeddings=8192,
            rope_theta=500_000.0,
        ),
        # small enough for CPU tests in milliseconds
        ModelShape(
            name="tiny",
            vocab_size=512,
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            intermediate_size=176,
            max_position_embeddings=512,
        ),
        # a few million parameters: CPU profiling and demos that still take real time per operator
        ModelShape(
            name="small",
            vocab_size=2048,
            hidden_size=256,
            num_layers=4,
            num_heads=8,
            num_kv_heads=4,
            head_dim=32,
            intermediate_size=704,
            max_position_embeddings=2048,
        ),
    )
}
