"""Trainer jobs: what a client submits (a spec, one model per job kind) and what it reads back.

A spec is checked in two steps before any work starts: its shape here (pydantic: a 422 naming the
field), then what needs the file system or the database (services/trainer/inputs.py).
"""

import hashlib
import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from shared.schemas.operators import OperatorSpec, fits, parse_slot_id

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

LossName = Literal["nmse", "mse", "l1", "cosine"]

Path = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        description="A path on the trainer's machine inside UNAST_INPUT_ROOTS or UNAST_ARTIFACTS_ROOT.",
    ),
]
Dataset = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        description="'shakespeare' (the built-in corpus: 38 plays, whole plays held out), or a directory "
        "inside the input roots holding train.txt and heldout.txt (UTF-8).",
    ),
]
LearningRate = Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]


class _JobSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seeds data order and initialisation.")
    checkpoint_every: int = Field(
        100, ge=1, le=1_000_000, description="Steps between checkpoints (a crash loses at most this many)."
    )


class DistillSpec(_JobSpec):
    """Layer-wise distillation (the paper's Stage 1): every candidate learns its slot's teacher sublayer."""

    kind: Literal["distill"] = "distill"
    teacher: Path = Field(description="Hugging Face Llama directory: config.json, *.safetensors, tokenizer.")
    dataset: Dataset = "shakespeare"
    candidates: dict[str, list[OperatorSpec]] = Field(
        min_length=1,
        max_length=4096,
        description="Slot id (block<N>.attn, block<N>.mlp) -> the candidate operators to learn for it.",
    )
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096)
    seq_len: int = Field(128, ge=2, le=131_072)
    learning_rate: LearningRate = 1e-3
    min_learning_rate: float = Field(1e-4, ge=0, le=10, allow_inf_nan=False)
    warmup: int = Field(0, ge=0, le=10_000_000)
    loss: LossName = "nmse"
    eval_batches: int = Field(8, ge=1, le=100_000, description="Held-out batches for the final NMSE.")

    @field_validator("candidates")
    @classmethod
    def _slots_and_fit(cls, candidates: dict[str, list[OperatorSpec]]) -> dict[str, list[OperatorSpec]]:
        for slot, specs in candidates.items():
            _, slot_type = parse_slot_id(slot)  # ValueError -> 422 naming the field
            if not 1 <= len(specs) <= 256:
                raise ValueError(f"{slot}: give between 1 and 256 candidates")
            for spec in specs:
                if not fits(spec, slot_type):
                    raise ValueError(f"{slot}: a {spec.kind} operator cannot fill a {slot_type} slot")
        return candidates

    @field_validator("min_learning_rate", "warmup")
    @classmethod
    def _within_bound(cls, value: float, info: ValidationInfo) -> float:
        bound = {"min_learning_rate": "learning_rate", "warmup": "steps"}[info.field_name]
        if value > info.data.get(bound, math.inf):
            raise ValueError(f"must not exceed {bound}")
        return value


class ScoreSpec(_JobSpec):
    """Candidate scores (the paper's e_ij): held-out loss with one slot replaced, minus the teacher's."""

    kind: Literal["score"] = "score"
    distill_job: str = Field(
        min_length=1, max_length=64, description="Id of a succeeded distill job: its teacher and candidates."
    )
    dataset: Dataset = "shakespeare"
    batch_size: int = Field(8, ge=1, le=4096)
    seq_len: int = Field(128, ge=2, le=131_072)
    eval_batches: int = Field(16, ge=1, le=100_000, description="Held-out batches the scores average over.")


# finetune and export join this union when their jobs are written.
JobSpec = Annotated[DistillSpec | ScoreSpec, Field(discriminator="kind")]


def spec_digest(spec: BaseModel) -> str:
    """sha256 of the spec's canonical JSON (defaults filled in): the same request has the same digest."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Job(BaseModel):
    """A job as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    spec: dict[str, Any]
    state: JobState
    step: int = Field(description="Steps done (as last reported by the worker's heartbeat).")
    steps: int | None = Field(description="Steps in all, once the job has started.")
    progress: float = Field(ge=0, le=1, description="step / steps, 1.0 when succeeded.")
    attempt: int = Field(description="How many times a worker has claimed this job.")
    cancel_requested: bool
    worker: str | None = Field(description="host:pid of the worker running it.")
    heartbeat_at: datetime | None
    error: str | None
    artifact_dir: str | None = Field(description="Where the job's checkpoints and outputs are written.")
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    jobs: list[Job]
    total: int = Field(description="Jobs matching the filters, regardless of limit and offset.")


class JobResult(BaseModel):
    job_id: str
    kind: str
    result: dict[str, Any]


class LogLine(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    attempt: int
    message: str


class JobLog(BaseModel):
    job_id: str
    state: JobState
    step: int
    steps: int | None
    progress: float
    lines: list[LogLine] = Field(description="The last lines the job logged, oldest first.")


class Artifact(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    path: str = Field(description="Absolute path on the trainer's machine.")
    bytes: int
    sha256: str
    meta: dict[str, Any]
    created_at: datetime
