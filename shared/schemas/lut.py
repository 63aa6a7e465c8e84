"""Cost lookup tables (LUTs): what the profiler measures, stores and answers, and the cost table it
exports for the search.

A LUT holds, for one device and one (model shape, regime, batch, length, dtype), the latency and memory
of every measured candidate operator plus the model's fixed part (embedding, final norm, LM head and the
blocks' own overhead), so that a whole architecture is predicted as fixed + the sum of its operators.
"""

import hashlib
import json
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from shared.schemas.operators import Architecture, OperatorSpec
from shared.schemas.shape import PRESETS, ModelShape

Regime = Literal["prefill", "decode"]
Dtype = Literal["float32", "float16", "bfloat16"]
DTYPE_BYTES: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}
COST_NAMES = ("latency_ms", "params", "weight_bytes", "kv_bytes_per_token", "activation_bytes")


def shape_hash(shape: ModelShape) -> str:
    """Stable hash of a shape's sizes and family (its name left out: these alone decide the costs). A
    Llama's family and missing window are left out too, so its hash is what it was before families."""
    plain_llama = {"family", "sliding_window"} if shape.family == "llama" else set()
    sizes = shape.model_dump(mode="json", exclude={"name", *plain_llama})
    canonical = json.dumps(sizes, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


ShapeRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        description="A preset name (tiny, small, llama2-7b, llama3-8b), the shape hash of a stored LUT, or a "
        "Hugging Face model directory (or its config.json) inside UNAST_INPUT_ROOTS: the directory a trainer "
        "job takes as its teacher.",
    ),
]


class LutKey(_Schema):
    """What one LUT is for, on one device: a model shape in one regime, batch, length and dtype."""

    shape: ModelShape = Field(
        description='A preset name ("tiny", "small", "llama2-7b", ...) or a full shape.'
    )
    regime: Regime = Field(
        "prefill", description="prefill: `length` new tokens at once; decode: one token after `length`."
    )
    batch: int = Field(1, ge=1, le=4096, description="Sequences per call.")
    length: int = Field(
        ge=1, le=1_048_576, description="prefill: sequence length; decode: tokens already in the KV cache."
    )
    dtype: Dtype = "float32"

    @field_validator("shape", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in PRESETS:
                raise ValueError(f"unknown preset {value!r}; presets: {', '.join(PRESETS)}")
            return PRESETS[value]
        return value

    @field_validator("length")
    @classmethod
    def _within_positions(cls, length: int, info: ValidationInfo) -> int:
        shape = info.data.get("shape")
        if not isinstance(shape, ModelShape):  # a named shape: checked once it is resolved
            return length
        tokens = length + (1 if info.data.get("regime") == "decode" else 0)
        if tokens > (limit := shape.max_position_embeddings):
            raise ValueError(f"{tokens} positions exceed the model's max_position_embeddings ({limit})")
        return length

    def key_fields(self) -> dict[str, Any]:
        """The LUT's unique key, minus the device."""
        return {
            "shape_hash": shape_hash(self.shape),
            "regime": self.regime,
            "batch": self.batch,
            "length": self.length,
            "dtype": self.dtype,
        }


class KeyRequest(LutKey):
    """A LUT key as a client names it: the shape may be named (the service resolves it)."""

    shape: ModelShape | ShapeRef = Field(description="A full shape, or a name for one (see ShapeRef).")

    @field_validator("shape", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:  # other names are resolved by the service
        return PRESETS.get(value, value) if isinstance(value, str) else value


class Measuring(_Schema):
    """How long and how carefully to time: runs go on until the median is known well or time is up."""

    time_cap_s: float = Field(
        60.0, gt=0, le=86_400, description="Stop refining medians after this long (min_runs still holds)."
    )
    target_ci: float = Field(
        0.01, gt=0, lt=1, description="Stop when the median's 95% interval is within +-this fraction."
    )
    min_runs: int = Field(30, ge=8, le=100_000, description="Timed calls of each thing at the least.")
    warmup_runs: int = Field(5, ge=0, le=10_000, description="Untimed calls of each thing first.")


class BuildOptions(Measuring):
    operators: list[OperatorSpec] | None = Field(
        None,
        min_length=1,
        max_length=512,
        description="Operators to measure; default: the candidate pool of the shape. "
        "The teacher's two operators are always measured.",
    )
    stability_threshold: float = Field(
        0.05,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="At its end a build re-times all its parts together, as it timed them; if their sum "
        "moved by more than this fraction it times everything again, and if it moved again the LUT is "
        "marked unstable.",
    )


class Build(BuildOptions, LutKey):
    """A LUT build with its shape resolved: what a profiler worker runs."""


class BuildRequest(BuildOptions, KeyRequest):
    """A LUT build as a client asks for it (POST /v1/luts)."""


class Stats(_Schema):
    """Call time over many runs (milliseconds), not one number."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int = Field(description="Timed calls (0: not timed, e.g. identity, which the block skips).")
    cv: float = Field(description="Coefficient of variation (standard deviation / mean) of the runs.")


class Costs(_Schema):
    """The costs the search budgets. activation_bytes: peak bytes of the call's intermediates."""

    latency_ms: float = Field(
        description="The call's latency: the 10th percentile of its call times (interference only adds "
        "time; the median and p90 are in the stats)."
    )
    params: int
    weight_bytes: int
    kv_bytes_per_token: int = Field(description="KV-cache bytes each token adds, per sequence.")
    activation_bytes: int


class Measured(_Schema):
    latency: Stats
    costs: Costs


class LutEntry(Measured):
    operator: OperatorSpec
    name: str = Field(description="spec_name: the candidate id in exports and searches.")
    hash: str = Field(description="spec_hash: stable content hash of the operator spec.")


class LutSummary(_Schema):
    id: int
    device_id: int
    shape: ModelShape
    shape_hash: str
    regime: Regime
    batch: int
    length: int
    dtype: Dtype
    operator_count: int
    activation_method: Literal["measured", "computed"] = Field(
        description="measured: CUDA allocator peak; computed: from tensor shapes (CPU)."
    )
    clock: Literal["thread_time", "perf_counter", "cuda_events"] = Field(
        description="thread_time: the calling thread's CPU time (CPU, one torch thread); perf_counter: "
        "wall time (CPU, several threads); cuda_events: GPU time between CUDA events."
    )
    build_seconds: float
    drift: float | None = Field(
        description="How much slower (+) or faster (-) the parts ran, all re-timed at the end of the build, "
        "than during it (None: built before builds checked this)."
    )
    stable: bool | None = Field(description="false: the device's speed moved during the build, twice.")
    measured_at: datetime

    def key(self) -> LutKey:
        return LutKey(
            shape=self.shape, regime=self.regime, batch=self.batch, length=self.length, dtype=self.dtype
        )


class Lut(LutSummary):
    fixed: Measured = Field(description="Embedding, final norm, LM head and every block's own overhead.")
    entries: list[LutEntry]


class Device(_Schema):
    id: int
    key: str = Field(description="Hash of the fingerprint: one device, one key.")
    name: str
    kind: Literal["cpu", "cuda"]
    memory_bytes: int
    fingerprint: dict[str, Any]
    created_at: datetime


class ThisDevice(_Schema):
    """The device this profiler measures, as its workers see it (probed)."""

    id: int | None = Field(description="Its id once a job has measured on it, else null.")
    key: str
    name: str
    kind: Literal["cpu", "cuda"]
    memory_bytes: int
    fingerprint: dict[str, Any]
    gflops: dict[str, float] = Field(
        default_factory=dict, description="A rough matmul rate per dtype (GFLOP/s), measured at probing."
    )


class BuildResult(_Schema):
    """What a succeeded build job answers at GET /v1/jobs/{id}/result: the LUT it wrote."""

    lut_id: int
    device_id: int


class ValidationResult(_Schema):
    """What a succeeded validation job answers at GET /v1/jobs/{id}/result: the validation it wrote."""

    validation_id: int
    lut_id: int
    device_id: int


class LutRef(_Schema):
    """Which LUT answers: its id, or the key it was built for (the device is in the path)."""

    lut_id: int | None = Field(None, ge=1, le=2**31 - 1, description="A LUT of this device.")
    shape: ModelShape | ShapeRef | None = Field(None, description="With `length`: the LUT of this key.")
    regime: Regime = "prefill"
    batch: int = Field(1, ge=1, le=4096)
    length: int | None = Field(None, ge=1, le=1_048_576)
    dtype: Dtype = "float32"

    @model_validator(mode="after")
    def _id_or_key(self) -> Self:
        if (self.lut_id is None) == (self.shape is None):
            raise ValueError("give either lut_id, or shape and length")
        if self.shape is not None and self.length is None:
            raise ValueError("length: needed with shape")
        return self


class OperatorCostRequest(LutRef):
    operator: OperatorSpec


class OperatorCost(LutEntry):
    lut_id: int
    device_id: int


class EstimateRequest(LutRef):
    architecture: Architecture = Field(
        description="A search solution as it is (its `choices`), or {choices}."
    )


class SlotCost(_Schema):
    slot: str
    operator: OperatorSpec
    name: str
    costs: Costs


class Estimate(_Schema):
    lut_id: int
    device_id: int
    latency_ms: float = Field(description="fixed + the sum of the slots' medians.")
    params: int
    weight_bytes: int
    kv_bytes_per_token: int
    kv_cache_bytes: int = Field(description="kv_bytes_per_token x batch x the tokens the regime caches.")
    activation_bytes: int = Field(description="The largest peak of any one part (parts run one at a time).")
    memory_bytes: int = Field(description="weight_bytes + kv_cache_bytes + activation_bytes.")
    fixed: Costs
    slots: list[SlotCost]


class ValidationRequest(Measuring):
    count: int = Field(20, ge=1, le=500, description="Random architectures to build and time end to end.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    architectures: list[Architecture] | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="Time these architectures (search solutions as they are: the winner's, say) instead of "
        "`count` random ones.",
    )


class ValidatedArchitecture(_Schema):
    architecture: Architecture
    predicted_ms: float
    measured: Stats
    error: float = Field(description="(predicted - measured) / measured, both the LUT's latency (p10).")


class Validation(_Schema):
    id: int
    lut_id: int
    count: int
    seed: int
    median_abs_error: float
    max_abs_error: float
    drift: float = Field(
        description="How much slower (+) or faster (-) the device ran the LUT's parts, all re-timed after "
        "the models as the build timed them, than when the LUT was built; the errors include it."
    )
    created_at: datetime
    architectures: list[ValidatedArchitecture]


class CostCandidate(_Schema):
    id: str = Field(description="spec_name of the operator.")
    costs: dict[str, int | float]
    reference: bool = Field(False, description="True on the teacher's operator.")
    operator: OperatorSpec


class CostSlot(_Schema):
    id: str
    candidates: list[CostCandidate]


class CostTable(_Schema):
    """A search request without scores and budgets: join the trainer's scores by operator, add budgets.

    Its costs are what the estimate adds up: summed over the parts (the fixed part and every slot's
    operator), but for `peak_costs`, the largest over the parts; `derived_costs` are sums of those
    (memory_bytes = weight_bytes + kv_cache_bytes + activation_bytes), so that a search's reported
    costs of an architecture equal this LUT's estimate of it.
    """

    lut_id: int
    device_id: int
    fixed: dict[str, int | float] = Field(description="The model's costs outside the slots.")
    peak_costs: list[str] = Field(description="Costs that aggregate by maximum over the parts.")
    derived_costs: dict[str, list[str]] = Field(description="Costs defined as sums of other costs.")
    slots: list[CostSlot]
