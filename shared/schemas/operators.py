"""Candidate operators for a block's slots, and architectures (one operator per slot).

A block has two slots, attention and MLP, each a pre-norm sublayer with a residual around it. A
candidate operator replaces the sublayer: identity (skip), one hidden x hidden linear layer, attention
with its own head counts and head size, or a SwiGLU MLP with its own intermediate size. The teacher's
own sublayer is the attention (or MLP) operator with the teacher's sizes. An operator spec is plain
data with a stable content hash: the same spec always builds the same module shape.
"""

import hashlib
import json
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from shared.schemas.shape import ModelShape

SlotType = Literal["attention", "mlp"]
SLOT_SUFFIX: dict[SlotType, str] = {"attention": "attn", "mlp": "mlp"}


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IdentityOp(_Spec):
    """The sublayer is skipped: the block passes its input through."""

    kind: Literal["identity"] = "identity"


class LinearOp(_Spec):
    """RMSNorm then one hidden x hidden linear layer (no bias)."""

    kind: Literal["linear"] = "linear"


class AttentionOp(_Spec):
    """RMSNorm then causal GQA attention with RoPE; heads x head_dim need not equal hidden."""

    kind: Literal["attention"] = "attention"
    num_heads: int = Field(ge=1, le=1024)
    num_kv_heads: int = Field(ge=1, le=1024)
    head_dim: int = Field(ge=2, le=1024, description="Even: RoPE rotates pairs of channels.")

    @model_validator(mode="after")
    def _divides(self) -> Self:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")
        return self


class MLPOp(_Spec):
    """RMSNorm then a SwiGLU MLP: down(silu(gate(x)) * up(x))."""

    kind: Literal["mlp"] = "mlp"
    intermediate_size: int = Field(ge=1, le=1_048_576)


OperatorSpec = Annotated[IdentityOp | LinearOp | AttentionOp | MLPOp, Field(discriminator="kind")]
operator_adapter: TypeAdapter[OperatorSpec] = TypeAdapter(OperatorSpec)


def spec_hash(spec: OperatorSpec) -> str:
    """Stable content hash: sha256 of the canonical JSON (sorted keys), first 16 hex digits."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def spec_name(spec: OperatorSpec) -> str:
    """A short readable name, e.g. attn_h8_kv2_d32 or mlp_i704."""
    match spec:
        case AttentionOp():
            return f"attn_h{spec.num_heads}_kv{spec.num_kv_heads}_d{spec.head_dim}"
        case MLPOp():
            return f"mlp_i{spec.intermediate_size}"
        case _:
            return spec.kind


def fits(spec: OperatorSpec, slot_type: SlotType) -> bool:
    """Identity and linear replace either sublayer; attention and MLP only their own kind."""
    return (
        spec.kind in ("identity", "linear")
        or spec.kind == {"attention": "attention", "mlp": "mlp"}[slot_type]
    )


def teacher_operator(shape: ModelShape, slot_type: SlotType) -> OperatorSpec:
    if slot_type == "attention":
        return AttentionOp(
            num_heads=shape.num_heads, num_kv_heads=shape.num_kv_heads, head_dim=shape.head_dim
        )
    return MLPOp(intermediate_size=shape.intermediate_size)


def is_teacher(spec: OperatorSpec, shape: ModelShape, slot_type: SlotType) -> bool:
    return spec == teacher_operator(shape, slot_type)


def slot_id(layer: int, slot_type: SlotType) -> str:
    """The paper's slot i, named as the search contract names it: block3.attn, block3.mlp."""
    return f"block{layer}.{SLOT_SUFFIX[slot_type]}"


def parse_slot_id(slot: str) -> tuple[int, SlotType]:
    block, _, suffix = slot.partition(".")
    types = {v: k for k, v in SLOT_SUFFIX.items()}
    if not block.startswith("block") or not block[5:].isdigit() or suffix not in types:
        raise ValueError(f"slot id {slot!r} is not of the form block<N>.attn or block<N>.mlp")
    return int(block[5:]), types[suffix]


class LayerChoice(BaseModel):
    """The operators chosen for one block's two slots."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attention: OperatorSpec
    mlp: OperatorSpec

    @model_validator(mode="after")
    def _fits(self) -> Self:
        for slot_type in ("attention", "mlp"):
            spec = getattr(self, slot_type)
            if not fits(spec, slot_type):
                raise ValueError(f"a {spec.kind} operator cannot fill the {slot_type} slot")
        return self


class Architecture(BaseModel):
    """One operator per slot: the candidate architecture C(x; Z) of the paper."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: list[LayerChoice] = Field(min_length=1, max_length=1024)

    @classmethod
    def teacher(cls, shape: ModelShape) -> Self:
        choice = LayerChoice(
            attention=teacher_operator(shape, "attention"), mlp=teacher_operator(shape, "mlp")
        )
        return cls(layers=[choice] * shape.num_layers)

    def slots(self) -> list[tuple[str, SlotType, OperatorSpec]]:
        """(slot id, slot type, operator) for every slot, in model order."""
        return [
            (slot_id(i, slot_type), slot_type, getattr(layer, slot_type))
            for i, layer in enumerate(self.layers)
            for slot_type in ("attention", "mlp")
        ]

    def replace(self, slot: str, spec: OperatorSpec) -> Self:
        """This architecture with one slot's operator replaced."""
        layer, slot_type = parse_slot_id(slot)
        layers = list(self.layers)
        layers[layer] = layers[layer].model_copy(update={slot_type: spec})
        return type(self)(layers=[LayerChoice.model_validate(c.model_dump()) for c in layers])

    def check_shape(self, shape: ModelShape) -> None:
        if len(self.layers) != shape.num_layers:
            raise ValueError(f"architecture has {len(self.layers)} layers, the model {shape.num_layers}")
