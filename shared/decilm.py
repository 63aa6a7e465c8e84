"""The DeciLM / Nemotron-NAS `block_configs` convention, to and from our architectures.

Serving stacks that load heterogeneous Llama models (vLLM's and TensorRT-LLM's DeciLMForCausalLM, the
Nemotron-NAS models' own Hugging Face code) read one entry per block:
- attention: `no_op` (skipped), `replace_with_linear` (RMSNorm, then one hidden x hidden linear layer,
  weight `self_attn.linear_attn.weight`), or GQA with the model's own query heads and head size and
  `num_attention_heads / n_heads_in_group` KV heads;
- ffn: `no_op`, `replace_with_linear` (weight `mlp.linear_mlp.weight`), or a SwiGLU whose width is
  `ffn_mult` turned into a size by find_multiple(int(2 * ffn_mult * hidden / 3), 256).
So an architecture fits the convention when every attention keeps the teacher's query heads and head
size (KV heads dividing them) and every MLP width is a multiple of 256; identity and linear always fit.
"""

from typing import Any

from shared.schemas.operators import (
    Architecture,
    AttentionOp,
    IdentityOp,
    LayerChoice,
    LinearOp,
    MLPOp,
    OperatorSpec,
    slot_id,
    spec_name,
)
from shared.schemas.shape import ModelShape

MODEL_TYPE = "nemotron-nas"
ARCHITECTURES = ["DeciLMForCausalLM"]
WIDTH_MULTIPLE = 256
# The convention's config and modelling code live beside NVIDIA's models on the Hugging Face Hub;
# a directory refers to them, as those models' own configs do (a loader fetches them with
# trust_remote_code; nothing here runs them).
AUTO_MAP = {
    "AutoConfig": "nvidia/Llama-3_1-Nemotron-51B-Instruct--configuration_decilm.DeciLMConfig",
    "AutoModelForCausalLM": "nvidia/Llama-3_1-Nemotron-51B-Instruct--modeling_decilm.DeciLMForCausalLM",
}


def ffn_width(ffn_mult: float, hidden: int) -> int:
    size = int(2 * ffn_mult * hidden / 3)
    return size if size % WIDTH_MULTIPLE == 0 else size + WIDTH_MULTIPLE - size % WIDTH_MULTIPLE


def _attention(spec: OperatorSpec, shape: ModelShape, slot: str) -> tuple[dict[str, Any] | None, str | None]:
    match spec:
        case IdentityOp():
            return {"no_op": True, "replace_with_linear": False, "n_heads_in_group": None}, None
        case LinearOp():
            return {"no_op": False, "replace_with_linear": True, "n_heads_in_group": None}, None
        case AttentionOp() if (spec.num_heads, spec.head_dim) == (shape.num_heads, shape.head_dim):
            group = spec.num_heads // spec.num_kv_heads
            return {"no_op": False, "replace_with_linear": False, "n_heads_in_group": group}, None
    return None, (
        f"{slot}: {spec_name(spec)} changes the query heads or the head size "
        f"(the convention keeps {shape.num_heads} heads of {shape.head_dim})"
    )


def _ffn(spec: OperatorSpec, shape: ModelShape, slot: str) -> tuple[dict[str, Any] | None, str | None]:
    match spec:
        case IdentityOp():
            return {"no_op": True, "replace_with_linear": False, "ffn_mult": None}, None
        case LinearOp():
            return {"no_op": False, "replace_with_linear": True, "ffn_mult": None}, None
        case MLPOp() if spec.intermediate_size % WIDTH_MULTIPLE == 0:
            ffn_mult = round(1.5 * spec.intermediate_size / shape.hidden_size, 6)
            if ffn_width(ffn_mult, shape.hidden_size) == spec.intermediate_size:
                return {"no_op": False, "replace_with_linear": False, "ffn_mult": ffn_mult}, None
    return None, (
        f"{slot}: {spec_name(spec)} has a width that is not a multiple of {WIDTH_MULTIPLE} "
        "(the convention's ffn_mult rounds widths up to one)"
    )


def block_configs(architecture: Architecture, shape: ModelShape) -> tuple[list[dict] | None, list[str]]:
    """(block_configs, []) when every block fits the convention, else (None, why each does not)."""
    if shape.family != "llama":  # its blocks have neither q/k/v biases, q/k norms nor a window
        return None, [f"the convention's blocks are Llama's; a {shape.family} model's attention is not"]
    blocks, reasons = [], []
    for i, layer in enumerate(architecture.layers):
        attention, why_a = _attention(layer.attention, shape, slot_id(i, "attention"))
        ffn, why_f = _ffn(layer.mlp, shape, slot_id(i, "mlp"))
        reasons += [why for why in (why_a, why_f) if why]
        blocks.append({"attention": attention, "ffn": ffn})
    return (None, reasons) if reasons else (blocks, [])


def config(architecture: Architecture, shape: ModelShape, dtype: str) -> dict[str, Any]:
    """A DeciLM config.json for an architecture that fits the convention (block_configs not None)."""
    blocks, reasons = block_configs(architecture, shape)
    if blocks is None:
        raise ValueError("; ".join(reasons))
    # num_key_value_heads and intermediate_size stay: the teacher's, as a Llama config has them (the
    # blocks override them), so that the teacher's shape can be read back
    return {
        **shape.to_hf_config(),
        "architectures": ARCHITECTURES,
        "model_type": MODEL_TYPE,
        "auto_map": AUTO_MAP,
        "block_configs": blocks,
        "torch_dtype": dtype,
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
