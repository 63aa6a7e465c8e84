"""Jobs as every service's API shows them (one face: services/jobs/routes.py), and the field types
every job spec shares.

Each job kind's spec and result live with its runner (services/trainer/kinds/<kind>.py). A spec is
checked in two steps before any work starts: its shape (pydantic: a 422 naming the field), then what
needs the file system or the database (the kind's `check`).
"""

import hashlib
import json
import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})  # a job in these stays in them

JobRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        description="A job's id (runs without the queue may also name the folder of an earlier local run).",
    ),
]
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
        "inside the input roots holding train.txt and heldout.txt (UTF-8; documents separated by "
        "<|endoftext|>, each streamed followed by the end-of-text token).",
    ),
]
LearningRate = Annotated[float, Field(gt=0, le=10, allow_inf_nan=False)]
SCHEDULE_BOUNDS = {"min_learning_rate": "learning_rate", "warmup": "steps"}


def within_schedule(value: float, info: ValidationInfo) -> float:
    """A spec's floor learning rate and warm-up may not exceed its learning rate and steps. Attach as
    `field_validator("min_learning_rate", "warmup")(within_schedule)`."""
    bound = SCHEDULE_BOUNDS[info.field_name]
    if value > info.data.get(bound, math.inf):
        raise ValueError(f"must not exceed {bound}")
    return value


class JobSpecBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seeds data order and initialisation.")
    checkpoint_every: int = Field(
        100, ge=1, le=1_000_000, description="Steps between checkpoints (a crash loses at most this many)."
    )


def spec_digest(spec: BaseModel) -> str:
    """sha256 of the spec's canonical JSON (defaults filled in): the same request has the same digest."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Job(BaseModel):
    """A job as the API shows it, whatever its service and kind (its outcome: GET /v1/jobs/{id}/result)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    spec: dict[str, Any]
    state: JobState
    step: int = Field(description="Steps done (as last reported by the worker's heartbeat).")
    steps: int | None = Field(description="Steps in all, once the job has started.")
    progress: float = Field(ge=0, le=1, description="How far the job is, 0..1 (1.0 when succeeded).")
    message: str = Field(description="What the job is doing now, as its worker last reported.")
    eta_s: float | None = Field(description="Seconds left at this attempt's pace so far (running jobs).")
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
    result: dict[str, Any] = Field(description="The kind's result model (see each kind in the README).")


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
    message: str
    eta_s: float | None
    lines: list[LogLine] = Field(description="The last lines the job logged, oldest first.")


class Artifact(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    path: str = Field(description="Absolute path on the trainer's machine.")
    bytes: int
    sha256: str
    meta: dict[str, Any]
    created_at: datetime
