"""The run directory's record, run.json: what each stage was asked, what it made, how long it took.

A stage is keyed by a digest of its inputs. Started again (after a crash, a Ctrl-C or a changed
budget), the pipeline reuses every stage whose digest is unchanged and whose work succeeded, waits
for a recorded job that is still queued or running, and redoes the rest. The file is replaced
atomically after every change, so a crash leaves the last state whole.
"""

import fcntl
import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.files import atomic_path, check_regular
from shared.schemas.operators import Architecture
from shared.schemas.search import Budget
from shared.schemas.shape import one_line

RECORD = "run.json"
LOCK = ".run.lock"  # held by the one unast compress writing the run directory


def digest(*parts: Any) -> str:
    """A stable digest of JSON-able inputs (pydantic models by their JSON)."""

    def plain(value: Any) -> Any:
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    canonical = json.dumps([plain(p) for p in parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


class RunInputs(BaseModel):
    """What the run was asked: the teacher, the device, the budgets and the configuration's fields."""

    model: str
    device: str
    budgets: list[Budget]
    config: dict[str, Any]
    dtype: str = "float32"
    format: str = "unast"
    targets: list[dict[str, Any]] = Field(default_factory=list)  # services/pipeline/targets.py: Target
    # --data: the dataset every trainer job reads ("shakespeare", or the prepared folder named by a digest
    # of the data, so that other data gives every job another spec and the stages are done again)
    data: str = "shakespeare"
    data_source: str | None = None  # --data as given, resolved


class StageRecord(BaseModel):
    """One stage in run.json: the key of its inputs, its state and time, the ids it made and what it
    noted for the report (fields a stage does not fill stay None)."""

    model_config = ConfigDict(extra="allow")  # a record written by another version still reads

    key: str | None = None
    state: Literal["running", "done"] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_s: float | None = None
    attempt: int = 0
    # ids
    job_id: str | None = None
    lut_id: int | None = None
    device_id: int | None = None
    validation_id: int | None = None
    # notes
    device: str | None = None
    drift: float | None = None
    stable: bool | None = None
    dtype_note: str | None = None
    median_abs_error: float | None = None
    max_abs_error: float | None = None
    teacher_loss: float | None = None
    tokens: int | None = None
    rank_stability: float | None = None
    spearman: float | None = None
    winner_search_rank: int | None = None
    perplexity: float | None = None
    status: str | None = None
    solutions: int | None = None
    architecture: Architecture | None = None
    fraction: float | None = None
    share: float | None = None  # of the latency budget (the uniform baseline's choice)
    files: int | None = None


class Record(BaseModel):
    # names this run's jobs on a shared stack: two runs with the same inputs submit jobs of their own,
    # so a stopped run cancels nothing another waits for (a record without one gets one)
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    inputs: RunInputs | None = None
    stages: dict[str, StageRecord] = {}


def lock(directory: Path) -> IO | None:
    """An exclusive lock on a run directory for as long as the returned file stays open (the process's
    life); None when another process holds it. Two runs writing one run.json would corrupt it."""
    directory.mkdir(parents=True, exist_ok=True)
    held = open(directory / LOCK, "a")  # noqa: SIM115 (open for the process's life)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.close()
        return None
    return held


class RecordError(ValueError):
    """A run.json this command cannot read: it is refused, not overwritten (it may be someone's)."""


class RunRecord:
    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / RECORD
        self.data = self._read() if self.path.exists() else Record()

    def _read(self) -> Record:
        try:  # a FIFO would block the read for good
            return Record.model_validate_json(check_regular(self.path).read_bytes())
        except ValidationError as exc:  # not JSON, or not a record's fields and types
            problem = one_line(exc)
        except (OSError, ValueError) as exc:
            problem = str(exc)
        raise RecordError(
            f"{RECORD} is not a record of unast compress ({problem}); move it or use another --out"
        )

    def stage(self, name: str) -> StageRecord:
        return self.data.stages.get(name) or StageRecord()

    def reusable(self, name: str, key: str) -> StageRecord | None:
        """The stage's record when it finished with these inputs."""
        record = self.stage(name)
        return record if record.key == key and record.state == "done" else None

    def update(self, name: str, **fields: Any) -> StageRecord:
        record = StageRecord.model_validate(self.stage(name).model_dump() | fields)
        self.data.stages[name] = record
        self.save()
        return record

    def start(self, name: str, key: str) -> None:
        """A stage begins (again): what an earlier attempt recorded under other inputs is dropped."""
        if self.stage(name).key != key:
            self.data.stages[name] = StageRecord()
        self.update(name, key=key, state="running", started_at=datetime.now(UTC))

    def finish(self, name: str, **fields: Any) -> StageRecord:
        wall = (datetime.now(UTC) - self.stage(name).started_at).total_seconds()
        return self.update(name, state="done", finished_at=datetime.now(UTC), wall_s=round(wall, 1), **fields)

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(self.data.model_dump_json(indent=1, exclude_none=True) + "\n")
