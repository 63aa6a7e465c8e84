"""The DeciLM / Nemotron-NAS `block_configs` form, to and from our architectures.

Serving stacks that load heterogeneous Llama models by `architectures: ["DeciLMForCausalLM"]` and
`model_type: "nemotron-nas"` (NVIDIA's own Hugging Face code, vLLM's nemotron_nas.py, TensorRT-LLM's
modeling_nemotron_nas.py, mlx-lm's nemotron-nas.py, llama.cpp's converter) read one `block_configs`
entry per block, the dataclasses of NVIDIA's block_config.py as `dataclasses.asdict` writes them:
- attention: `no_op` (the sublayer and its norm are skipped), `replace_with_linear` (RMSNorm, then one
  hidden x hidden linear layer, weight `self_attn.linear_attn.weight`), else GQA with the model's own
  `num_attention_heads` query heads of `hidden_size / num_attention_heads` channels and
  `num_attention_heads // n_heads_in_group` KV heads; besides, `sparsify`, `window_length`,
  `num_sink_tokens`, `use_prefill_window_in_sink_attention` and `unshifted_sink` (None / False here:
  no window, no sinks);
- ffn: `no_op`, `replace_with_linear` (weight `mlp.linear_mlp.weight`), else a SwiGLU whose width is
  find_multiple(int(2 * ffn_mult * hidden / 3), 256); besides, `sparsify` (None).
So an operator fits the form when it is identity or linear, an attention with the model's query heads
and head size (any KV count dividing them; the model's head size must be hidden / heads, which is how
the readers compute it), or an MLP whose width is a multiple of 256. Only Llama blocks: no q/k/v
biases, q/k norms or sliding window. `problem` says why an operator does not fit.

Not every reader takes every entry: vLLM's and ExLlamaV3's models have no `replace_with_linear` (vLLM
computes `num_attention_heads // None` for a linear attention), and llama.cpp's converter has a linear
attention but no linear MLP. NVIDIA's code, TensorRT-LLM and mlx-lm take all of them.
"""

from typing import Any, Literal, get_args

from shared import hf_code
from shared.schemas.operators import (
    Architecture,
    AttentionOp,
    IdentityOp,
    LayerChoice,
    LinearOp,
    MLPOp,
    OperatorSpec,
    SlotType,
    fits,
    spec_name,
)
from shared.schemas.shape import TEACHER_KEY, ModelShape

Format = Literal["unast", "nemotron-nas"]
FORMATS: tuple[str, ...] = get_args(Format)
MODEL_TYPE = "nemotron-nas"
ARCHITECTURES = ["DeciLMForCausalLM"]
WIDTH_MULTIPLE = 256
# Every field of an entry, at the value of a block that uses none of them: exactly the keys NVIDIA's
# dataclasses write (mlx-lm builds its dataclasses from the entry, so an unknown key is an error there)
ATTENTION_FIELDS: dict[str, Any] = {
    "no_op": False,
    "replace_with_linear": False,
    "sparsify": None,
    "n_heads_in_group": None,
    "window_length": None,
    "num_sink_tokens": None,
    "use_prefill_window_in_sink_attention": False,
    "unshifted_sink": False,
}
FFN_FIELDS: dict[str, Any] = {
    "no_op": False,
    "replace_with_linear": False,
    "sparsify": None,
    "ffn_mult": None,
}


def ffn_width(ffn_mult: float, hidden: int) -> int:
    """The form's MLP width for an ffn_mult: int(2 * ffn_mult * hidden / 3) rounded up to 256."""
    size = int(2 * ffn_mult * hidden / 3)
    return size if size % WIDTH_MULTIPLE == 0 else size + WIDTH_MULTIPLE - size % WIDTH_MULTIPLE


def ffn_mult(width: int, hidden: int) -> float:
    """The ffn_mult that reads back as `width` (NVIDIA's dataclass rounds it to 6 decimals too)."""
    return round(1.5 * width / hidden, 6)


def family_problem(shape: ModelShape) -> str | None:
    """Why no model of this shape fits the form (its family's attention is not Llama's), else None."""
    if shape.family != "llama":  # its blocks have neither q/k/v biases, q/k norms nor a window
        return f"the form's blocks are Llama's; a {shape.family} model's attention is not"
    return None


def operator_problem(
    spec: OperatorSpec, slot_type: SlotType, *, num_heads: int | None, head_dim: int | None
) -> str | None:
    """Why the form cannot express `spec` in a `slot_type` slot of a model whose attention has
    `num_heads` query heads of `head_dim` (None: unknown, so no attention fits); None when it can.
    What a caller that knows only the slot's reference operator can tell (the search); `problem` adds
    what the model's shape says."""
    name = spec_name(spec)
    if not fits(spec, slot_type):
        return f"{name} cannot fill a {slot_type} slot"
    match spec:
        case AttentionOp() if num_heads is None or head_dim is None:
            return f"{name}: the model's query heads and head size are unknown"
        case AttentionOp() if (spec.num_heads, spec.head_dim) != (num_heads, head_dim):
            return (
                f"{name} changes the query heads or the head size (the form keeps the model's "
                f"{num_heads} heads of {head_dim}; only the KV heads vary)"
            )
        case MLPOp() if spec.intermediate_size % WIDTH_MULTIPLE:
            return (
                f"{name} has a width that is not a multiple of {WIDTH_MULTIPLE} "
                "(the form's ffn_mult rounds widths up to one)"
            )
    return None


def problem(spec: OperatorSpec, slot_type: SlotType, shape: ModelShape) -> str | None:
    """Why the form cannot express `spec` in a `slot_type` slot of a model of this shape; None when
    it can (block_configs, the servable pools and the trainer's check all ask this)."""
    if (why := family_problem(shape)) is not None:
        return why
    why = operator_problem(spec, slot_type, num_heads=shape.num_heads, head_dim=shape.head_dim)
    if why is not None:
        return why
    if isinstance(spec, AttentionOp) and shape.num_heads * shape.head_dim != shape.hidden_size:
        return (
            f"{spec_name(spec)}: the form's readers take the head size as hidden / heads "
            f"({shape.hidden_size} / {shape.num_heads}), not the model's {shape.head_dim}"
        )
    if isinstance(spec, MLPOp):
        hidden = shape.hidden_size
        if ffn_width(ffn_mult(spec.intermediate_size, hidden), hidden) != spec.intermediate_size:
            return f"{spec_name(spec)}: no ffn_mult reads back as this width for hidden {hidden}"
    return None


def expresses(spec: OperatorSpec, slot_type: SlotType, shape: ModelShape) -> bool:
    return problem(spec, slot_type, shape) is None


def slot_problems(architecture: Architecture, shape: ModelShape) -> dict[str, str]:
    """Slot -> why the form cannot express its operator, for every slot it cannot (empty: it fits)."""
    return {
        slot: why
        for slot, slot_type, spec in architecture.slots()
        if (why := problem(spec, slot_type, shape)) is not None
    }


def _attention(spec: OperatorSpec) -> dict[str, Any]:
    match spec:
        case IdentityOp():
            return {**ATTENTION_FIELDS, "no_op": True}
        case LinearOp():
            return {**ATTENTION_FIELDS, "replace_with_linear": True}
        case AttentionOp():
            return {**ATTENTION_FIELDS, "n_heads_in_group": spec.num_heads // spec.num_kv_heads}
    raise ValueError(f"{spec_name(spec)} is no attention operator")


def _ffn(spec: OperatorSpec, shape: ModelShape) -> dict[str, Any]:
    match spec:
        case IdentityOp():
            return {**FFN_FIELDS, "no_op": True}
        case LinearOp():
            return {**FFN_FIELDS, "replace_with_linear": True}
        case MLPOp():
            return {**FFN_FIELDS, "ffn_mult": ffn_mult(spec.intermediate_size, shape.hidden_size)}
    raise ValueError(f"{spec_name(spec)} is no MLP operator")


def block_configs(architecture: Architecture, shape: ModelShape) -> tuple[list[dict] | None, list[str]]:
    """(block_configs, []) when every block fits the form, else (None, "<slot>: why" for each slot that
    does not, or one line when the model's family does not)."""
    if (why := family_problem(shape)) is not None:
        return None, [why]
    problems = slot_problems(architecture, shape)
    if problems:
        return None, [f"{slot}: {why}" for slot, why in problems.items()]
    blocks = [
        {"attention": _attention(layer.attention), "ffn": _ffn(layer.mlp, shape)}
        for layer in architecture.layers
    ]
    return blocks, []


def config(architecture: Architecture, shape: ModelShape, dtype: str) -> dict[str, Any]:
    """A DeciLM config.json for an architecture that fits the form (block_configs not None)."""
    blocks, reasons = block_configs(architecture, shape)
    if blocks is None:
        raise ValueError("; ".join(reasons))
    # num_key_value_heads and intermediate_size are null, as NVIDIA's configs have them (the form's
    # readers take both from the blocks): a plain Llama loader then refuses the directory instead of
    # filling its no-op blocks with random weights. Our loader reads the teacher's shape from TEACHER_KEY.
    return {
        **shape.to_hf_config(),
        "architectures": ARCHITECTURES,
        "model_type": MODEL_TYPE,
        "auto_map": hf_code.AUTO_MAP,
        "num_key_value_heads": None,
        "intermediate_size": None,
        "block_configs": blocks,
        "torch_dtype": dtype,
        TEACHER_KEY: shape.model_dump(mode="json"),
    }


def architecture(config: dict[str, Any], shape: ModelShape) -> Architecture:
    """The architecture a DeciLM config's block_configs describe."""
    layers = []
    for block in config["block_configs"]:
        attention, ffn = block["attention"], block["ffn"]
        if attention.get("no_op"):
            attn: OperatorSpec = IdentityOp()
        elif attention.get("replace_with_linear"):
            attn = LinearOp()
        else:
            kv = shape.num_heads // attention["n_heads_in_group"]
            attn = AttentionOp(num_heads=shape.num_heads, num_kv_heads=kv, head_dim=shape.head_dim)
        if ffn.get("no_op"):
            mlp: OperatorSpec = IdentityOp()
        elif ffn.get("replace_with_linear"):
            mlp = LinearOp()
        else:
            mlp = MLPOp(intermediate_size=ffn_width(ffn["ffn_mult"], shape.hidden_size))
        layers.append(LayerChoice(attention=attn, mlp=mlp))
    return Architecture.from_layers(layers)
