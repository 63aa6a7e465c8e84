"""The shape of a Llama-family teacher: its family, its sizes and its positions; presets, or read from a
Hugging Face config.json.

Four families share one decoder (RMSNorm, RoPE, GQA attention, SwiGLU MLP) and differ in a few traits:
Qwen2 adds biases to the query, key and value projections, Qwen3 normalises each head's queries and keys,
Mistral may attend within a sliding window. The family is part of the shape, so two teachers of the same
sizes but different families never share a LUT. Anything else a config asks for is refused, one line
naming the field, rather than computed as something it is not.
"""

from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Family = Literal["llama", "qwen2", "qwen3", "mistral"]


@dataclass(frozen=True)
class Traits:
    """What a family's attention does beyond Llama's, and the transformers class that loads it."""

    architecture: str
    attention_bias: bool = False  # biases on q, k and v (not o)
    qk_norm: bool = False  # RMSNorm over each head's q and k, before RoPE
    sliding_window: bool = False  # may attend to the last `sliding_window` positions only


TRAITS: dict[str, Traits] = {
    "llama": Traits("LlamaForCausalLM"),
    "qwen2": Traits("Qwen2ForCausalLM", attention_bias=True),
    "qwen3": Traits("Qwen3ForCausalLM", qk_norm=True),
    "mistral": Traits("MistralForCausalLM", sliding_window=True),
}
DECILM_TYPE = "nemotron-nas"  # Llama blocks that vary (shared/decilm.py reads them)
UNAST_TYPE = "unast"  # a compressed export (shared/model.py: unast_config); its teacher's shape inside
TEACHER_KEY = "unast_teacher"

# RoPE types and the keys each needs (Hugging Face's rope_scaling / rope_parameters)
ROPE_KEYS: dict[str, tuple[str, ...]] = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "yarn": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def rope_type(scaling: dict[str, Any] | None) -> str:
    scaling = scaling or {}
    return scaling.get("rope_type", scaling.get("type", "default"))


class ModelShape(BaseModel):
    """Sizes and traits of a Llama-family decoder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(None, max_length=100, description="Preset or model name, for people.")
    family: Family = Field("llama", description="The model family: llama, qwen2, qwen3 or mistral.")
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
        None,
        description="Hugging Face rope_scaling: None or rope_type default, llama3, linear, dynamic or yarn.",
    )
    rms_norm_eps: float = Field(1e-5, gt=0, lt=1)
    tie_word_embeddings: bool = False
    sliding_window: int | None = Field(
        None, ge=1, le=10_485_760, description="Mistral: each position attends to at most this many."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")
        kind = rope_type(self.rope_scaling)
        if kind not in ROPE_KEYS:
            raise ValueError(f"rope_scaling: rope type {kind!r} is not supported ({', '.join(ROPE_KEYS)})")
        for key in ROPE_KEYS[kind]:
            if not isinstance((self.rope_scaling or {}).get(key), int | float):
                raise ValueError(f"rope_scaling: rope type {kind!r} needs a number {key!r}")
        if self.sliding_window is not None and not self.traits.sliding_window:
            raise ValueError(f"sliding_window: the {self.family} family has no sliding-window attention")
        return self

    @property
    def traits(self) -> Traits:
        return TRAITS[self.family]

    @property
    def attention_bias(self) -> bool:
        return self.traits.attention_bias

    @property
    def qk_norm(self) -> bool:
        return self.traits.qk_norm

    @property
    def num_slots(self) -> int:
        return 2 * self.num_layers

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> Self:
        """Read a Hugging Face config.json (a dict) of a supported family, or a DeciLM / Nemotron-NAS one
        (Llama blocks that vary; shared/decilm.py reads them). ValueError, one line naming the field, for
        anything this project would not compute exactly as transformers does."""
        model_type = config.get("model_type")
        if model_type in (UNAST_TYPE, DECILM_TYPE) and isinstance(config.get(TEACHER_KEY), dict):
            try:
                return cls.model_validate(config[TEACHER_KEY])
            except ValidationError as exc:
                raise ValueError(f"{TEACHER_KEY}.{one_line(exc)}") from None
        family = "llama" if model_type == DECILM_TYPE else model_type
        if family not in TRAITS:
            known = ", ".join([*TRAITS, DECILM_TYPE])
            raise ValueError(f"model_type: {model_type!r} is not supported (only {known})")
        traits = TRAITS[family]
        if (act := config.get("hidden_act", "silu")) != "silu":
            raise ValueError(f"hidden_act: {act!r} is not supported ({family} computes 'silu')")
        if config.get("attention_bias") and not traits.attention_bias:
            raise ValueError(f"attention_bias: true is not supported ({family}'s attention has no biases)")
        if config.get("mlp_bias"):
            raise ValueError("mlp_bias: true is not supported (the MLPs have no biases)")
        sliding_layers = "sliding_attention" in (config.get("layer_types") or [])
        if not traits.sliding_window and (config.get("use_sliding_window") or sliding_layers):
            raise ValueError(f"use_sliding_window: true is not supported for {family}")
        rope = config.get("rope_parameters") or {}  # transformers >= 5 nests the RoPE settings
        if not isinstance(rope, dict):
            raise ValueError(f"rope_parameters: an object of RoPE settings, not {type(rope).__name__}")
        if any(isinstance(v, dict) for v in rope.values()) or not isinstance(rope_type(rope), str):
            # {"full_attention": {...}, "sliding_attention": {...}}
            raise ValueError("rope_parameters: one set for every layer is supported, not one per layer type")
        if (partial := config.get("partial_rotary_factor", rope.get("partial_rotary_factor", 1.0))) != 1.0:
            raise ValueError(f"partial_rotary_factor: {partial} is not supported (RoPE on every channel)")
        scaling = config.get("rope_scaling")
        if scaling is None and rope_type(rope) != "default":
            scaling = rope
        if "original_max_position_embeddings" in config and rope_type(scaling) in ("llama3", "yarn"):
            # transformers lets a top-level original length win over the RoPE settings' own
            scaling = {
                **scaling,
                "original_max_position_embeddings": config["original_max_position_embeddings"],
            }
        heads = _required(config, "num_attention_heads")
        try:
            return cls(
                name=config.get("_name_or_path") or None,
                family=family,
                vocab_size=_required(config, "vocab_size"),
                hidden_size=_required(config, "hidden_size"),
                num_layers=_required(config, "num_hidden_layers"),
                num_heads=heads,
                num_kv_heads=config.get("num_key_value_heads") or heads,
                head_dim=config.get("head_dim") or _required(config, "hidden_size") // heads,
                intermediate_size=_required(config, "intermediate_size"),
                max_position_embeddings=config.get("max_position_embeddings", 2048),
                rope_theta=config.get("rope_theta", rope.get("rope_theta", 10_000.0)),
                rope_scaling=scaling,
                rms_norm_eps=config.get("rms_norm_eps", 1e-5),
                tie_word_embeddings=config.get("tie_word_embeddings", False),
                sliding_window=config.get("sliding_window") if traits.sliding_window else None,
            )
        except ValidationError as exc:
            raise ValueError(one_line(exc)) from None

    def to_hf_config(self) -> dict[str, Any]:
        """The config.json of this family's transformers class (LlamaForCausalLM, ...) for this shape."""
        config = {
            "architectures": [self.traits.architecture],
            "model_type": self.family,
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
        match self.family:
            case "qwen2":
                del config["attention_bias"], config["mlp_bias"]  # Qwen2's q/k/v biases are not optional
                config["use_sliding_window"] = False
            case "qwen3":
                del config["mlp_bias"]
                config["use_sliding_window"] = False
            case "mistral":
                del config["attention_bias"], config["mlp_bias"]
                config["sliding_window"] = self.sliding_window
        return config


def stored_dtype(config: dict[str, Any]) -> str:
    """The dtype a config.json says its weights are in (transformers 4.x: torch_dtype, 5.x: dtype)."""
    return config.get("torch_dtype") or config.get("dtype") or "float32"


def _required(config: dict[str, Any], key: str) -> Any:
    if key not in config:
        raise ValueError(f"{key}: missing from config.json")
    return config[key]


def one_line(exc: ValidationError) -> str:
    """A pydantic error as one line naming its field (the first error; the rest counted)."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(map(str, first["loc"]))
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


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
