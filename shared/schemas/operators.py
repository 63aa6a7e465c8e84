"""Candidate operators for a block's slots, and architectures (one operator per slot).

A block has two slots, attention and MLP, each a pre-norm sublayer with a residual around it. A
candidate operator replaces the sublayer: identity (skip), one hidden x hidden linear layer, attention
with its own head counts and head size, or a SwiGLU MLP with its own intermediate size. The teacher's
own sublayer is the attention (or MLP) operator with the teacher's sizes. An operator spec is plain
data with a stable content hash: the same spec always builds the same module shape.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

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


_OPERATOR_NAME = re.compile(r"attn_h(\d+)_kv(\d+)_d(\d+)|mlp_i(\d+)|identity|linear")


def operator_from_name(name: str) -> OperatorSpec:
    """The operator a candidate id names: the inverse of spec_name. ValueError for any other name."""
    found = _OPERATOR_NAME.fullmatch(name)
    if found is None:
        raise ValueError(
            f"{name!r} names no operator (attn_h<heads>_kv<kv heads>_d<head dim>, mlp_i<size>, "
            "identity or linear)"
        )
    heads, kv_heads, head_dim, size = found.groups()
    if heads is not None:
        return AttentionOp(num_heads=int(heads), num_kv_heads=int(kv_heads), head_dim=int(head_dim))
    if size is not None:
        return MLPOp(intermediate_size=int(size))
    return IdentityOp() if name == "identity" else LinearOp()


def _slot_id(slot: str) -> str:
    parse_slot_id(slot)
    return slot


def _candidate_id(name: str) -> str:
    operator_from_name(name)
    return name


SlotId = Annotated[str, Field(max_length=32), AfterValidator(_slot_id)]
CandidateId = Annotated[str, Field(max_length=64), AfterValidator(_candidate_id)]


class Architecture(BaseModel):
    """One operator per slot: the candidate architecture C(x; Z) of the paper.

    In the search's own words: slot id -> candidate id, where a candidate id names its operator
    (spec_name). Every service reads and writes this one form, and a search solution validates as it
    is (its rank, objective, costs and bounds are ignored), so clients pass solutions through unchanged:
    as JSON, or in Python as the search client's Solution objects.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", from_attributes=True)

    choices: dict[SlotId, CandidateId] = Field(
        min_length=2,
        max_length=2048,
        description="Slot id (block<N>.attn, block<N>.mlp) -> candidate id naming its operator "
        "(attn_h<heads>_kv<kv heads>_d<head dim>, mlp_i<intermediate size>, identity, linear); "
        "every slot of blocks 0..N-1. A search solution's `choices`.",
    )

    @field_validator("choices")
    @classmethod
    def _complete_and_fitting(cls, choices: dict[str, str]) -> dict[str, str]:
        blocks = 1 + max(parse_slot_id(slot)[0] for slot in choices)
        for slot, slot_type in _slot_order(blocks):
            if slot not in choices:
                raise ValueError(f"{slot}: missing (every slot of blocks 0..{blocks - 1} needs a choice)")
            spec = operator_from_name(choices[slot])
            if not fits(spec, slot_type):
                raise ValueError(f"{slot}: {choices[slot]!r} cannot fill a {slot_type} slot")
        # model order, so that equal architectures serialise (and hash) alike
        return {slot: choices[slot] for slot, _ in _slot_order(blocks)}

    @classmethod
    def from_operators(cls, operators: Mapping[str, OperatorSpec]) -> Self:
        """From slot id -> operator spec."""
        return cls(choices={slot: spec_name(spec) for slot, spec in operators.items()})

    @classmethod
    def from_layers(cls, layers: Iterable[LayerChoice]) -> Self:
        return cls.from_operators(
            {slot_id(i, t): getattr(layer, t) for i, layer in enumerate(layers) for t in ("attention", "mlp")}
        )

    @classmethod
    def teacher(cls, shape: ModelShape) -> Self:
        choice = LayerChoice(
            attention=teacher_operator(shape, "attention"), mlp=teacher_operator(shape, "mlp")
        )
        return cls.from_layers([choice] * shape.num_layers)

    @property
    def num_layers(self) -> int:
        return len(self.choices) // 2

    def operator(self, slot: str) -> OperatorSpec:
        return operator_from_name(self.choices[slot])

    @property
    def layers(self) -> list[LayerChoice]:
        """Per block, its two operators."""
        return [
            LayerChoice(
                attention=self.operator(slot_id(i, "attention")), mlp=self.operator(slot_id(i, "mlp"))
            )
            for i in range(self.num_layers)
        ]

    def slots(self) -> list[tuple[str, SlotType, OperatorSpec]]:
        """(slot id, slot type, operator) for every slot, in model order."""
        return [(slot, slot_type, self.operator(slot)) for slot, slot_type in _slot_order(self.num_layers)]

    def replace(self, slot: str, spec: OperatorSpec) -> Self:
        """This architecture with one slot's operator replaced."""
        if slot not in self.choices:
            raise ValueError(f"{slot}: not a slot of this architecture")
        return type(self)(choices={**self.choices, slot: spec_name(spec)})

    def check_shape(self, shape: ModelShape) -> None:
        """ValueError naming the first slot that the model lacks or the architecture misses."""
        if self.num_layers > shape.num_layers:
            raise ValueError(
                f"{slot_id(shape.num_layers, 'attention')}: the model has {shape.num_layers} blocks"
            )
        if self.num_layers < shape.num_layers:
            missing = slot_id(self.num_layers, "attention")
            raise ValueError(f"{missing}: missing (the model has {shape.num_layers} blocks)")


def _slot_order(blocks: int) -> list[tuple[str, SlotType]]:
    return [(slot_id(i, t), t) for i in range(blocks) for t in ("attention", "mlp")]
