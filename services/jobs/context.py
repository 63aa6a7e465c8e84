"""What a running job sees of the machinery: the `JobContext` protocol and its two implementations.

A runner is a plain function `run(ctx)` with a flat loop that calls `ctx.step(step, steps)` at the top
of every step (that is where a cancel or a shutdown stops it), saves a checkpoint every
`checkpoint_every` steps and resumes from `ctx.load_checkpoint()`. The same runner runs queued (a
worker claimed it: QueuedContext, on the database) or locally (`LocalContext`: a folder, alone or
as one rank under torchrun, where rank 0 logs and writes).
"""

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.jobs.checkpoint import (
    NO_OPTIMIZER,
    Checkpoint,
    ShardedCheckpoint,
    commit_shards,
    load_checkpoint,
    load_shards,
    save_checkpoint,
    save_shard,
    write_artifact,
)
from services.jobs.queue import JobQueue
from shared.db import named_lock
from shared.files import atomic_path
from shared.settings import Settings


class JobStopped(Exception):
    """Raised by ctx.step() to leave the job's loop; `outcome` says what becomes of the job."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome  # "cancelled", "released" (back to the queue) or "lost" (not ours any more)


@dataclass(frozen=True)
class JobRecord:
    """Another job, as a runner reads it (e.g. the distill job whose candidates a score job scores)."""

    id: str
    kind: str
    spec: dict[str, Any]
    state: str
    result: dict[str, Any] | None
    directory: Path | None  # where it wrote its checkpoints and outputs


@runtime_checkable
class JobContext(Protocol):
    job_id: str  # the job's id (a local run: its folder)
    spec: dict[str, Any]  # the job's spec as stored (validated, paths resolved)
    settings: Settings
    directory: Path  # the job's own folder: checkpoints and outputs
    rank: int  # 0 unless run as one of several torchrun processes
    world_size: int

    def step(self, step: int, steps: int, progress: float | None = None) -> None:
        """At the top of each step, with the steps done so far: records progress (step / steps unless
        given, for jobs with more to do after their steps); raises JobStopped when the job was
        cancelled or its worker is shutting down."""

    def status(self, message: str, progress: float | None = None) -> None:
        """What the job is doing now (and how far it is, 0..1), for work that is not counted in steps;
        raises JobStopped when the job was cancelled (as its last heartbeat saw: status reads no
        database, so a measuring loop may call it every round) or its worker is shutting down."""

    def log(self, message: str) -> None:
        """A line in the job's log."""

    def job(self, ref: str) -> JobRecord:
        """Another job by id (LookupError when there is none)."""

    def exclusive(self, name: str) -> contextlib.AbstractContextManager:
        """A lock named `name` across every process that shares this job store."""

    def save_checkpoint(
        self,
        *,
        step: int,
        model: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer | None = None,
        extra: Mapping[str, torch.Tensor] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """Checkpoint after `step` steps; the job's spec is stored with it as its config."""

    def load_checkpoint(self) -> Checkpoint | None:
        """The job's last checkpoint (after a crash or a shutdown), or None on a fresh start."""

    def save_sharded_checkpoint(
        self, *, step: int, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any] | None = None
    ) -> None:
        """Checkpoint after `step` steps, each rank its own tensors (a collective: every rank calls it)."""

    def load_sharded_checkpoint(self, wanted: Callable[[str], bool]) -> ShardedCheckpoint | None:
        """The job's last sharded checkpoint, with only the tensors this rank wants, or None."""

    def save_artifact(self, name: str, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        """An output: <dir>/<name>.safetensors with meta as <name>.json beside it, written atomically."""


class _Folder:
    """Checkpoints under <directory>/checkpoint, written with the job's spec as their config."""

    spec: dict[str, Any]
    directory: Path
    rank: int
    world_size: int
    log: Callable[[str], None]

    @property
    def checkpoint_dir(self) -> Path:
        return self.directory / "checkpoint"

    def save_checkpoint(self, *, step, model, optimizer=None, extra=None, state=None) -> None:
        save_checkpoint(
            self.checkpoint_dir,
            step=step,
            config=self.spec,
            model=model,
            optimizer=optimizer.state_dict() if optimizer else NO_OPTIMIZER,
            extra=extra,
            state=state,
        )

    def load_checkpoint(self) -> Checkpoint | None:
        return self._resumed(load_checkpoint(self.checkpoint_dir))

    def save_sharded_checkpoint(self, *, step, tensors, state=None) -> None:
        rank, world = self.rank, self.world_size
        save_shard(self.checkpoint_dir, step=step, rank=rank, tensors=tensors)
        if world > 1:
            dist.barrier()  # every rank's file is whole before the pointer names it
        if rank == 0:
            commit_shards(self.checkpoint_dir, step=step, world=world, config=self.spec, state=state)
        if world > 1:
            dist.barrier()  # nobody trains on (or dies) before the commit

    def load_sharded_checkpoint(self, wanted) -> ShardedCheckpoint | None:
        return self._resumed(load_shards(self.checkpoint_dir, wanted))

    def _resumed(self, checkpoint):
        if checkpoint is None:
            return None
        if checkpoint.config != self.spec:
            raise RuntimeError(f"the checkpoint in {self.checkpoint_dir} was written for another spec")
        self.log(f"resuming from the checkpoint at step {checkpoint.step}")
        return checkpoint


class QueuedContext(_Folder):
    """A job claimed by a worker: progress, cancel and logs go through the job's row."""

    rank, world_size = 0, 1

    def __init__(
        self,
        *,
        job_id: str,
        spec: dict[str, Any],
        attempt: int,
        directory: Path,
        settings: Settings,
        queue: JobQueue,
        engine: Engine,
        sessions: sessionmaker[Session],
        worker: str,
        stopping: threading.Event,
    ):
        self.job_id = job_id
        self.spec = spec
        self.attempt = attempt
        self.directory = directory
        self.settings = settings
        self.worker = worker
        # read by the heartbeat thread
        self.step_done = 0
        self.steps: int | None = None
        self.progress: float | None = None
        self.message: str | None = None
        self.lost = threading.Event()  # set by the heartbeat when the job was taken from this worker
        self.cancelled = threading.Event()  # set by the heartbeat when a cancel was asked
        self._queue = queue
        self._engine = engine
        self._sessions = sessions
        self._stopping = stopping

    def step(self, step: int, steps: int, progress: float | None = None) -> None:
        self.step_done, self.steps = step, steps
        self.progress = progress if progress is not None else step / steps if steps else None
        self.message = f"step {step + 1} of {steps}" if step < steps else f"{steps} steps done"
        self._stop_if_asked(f"at step {step}")
        with self._sessions() as session:
            if self._queue.cancel_requested(session, job_id=self.job_id):
                raise JobStopped("cancelled", f"cancel requested; stopped at step {step}")

    def status(self, message: str, progress: float | None = None) -> None:
        self.message = message
        if progress is not None:
            self.progress = progress
        self._stop_if_asked(f"while {message}")

    def _stop_if_asked(self, where: str) -> None:
        if self.lost.is_set():
            raise JobStopped("lost", "the job was re-queued by another worker (this one was taken for dead)")
        if self.cancelled.is_set():
            raise JobStopped("cancelled", f"cancel requested; stopped {where}")
        if self._stopping.is_set():
            raise JobStopped("released", f"worker shutting down {where}: back to the queue")

    def log(self, message: str) -> None:
        with self._sessions() as session:
            self._queue.append_log(session, job_id=self.job_id, attempt=self.attempt, message=message)

    def job(self, ref: str) -> JobRecord:
        with self._sessions() as session:
            row = self._queue.get(session, job_id=ref)
            if row is None:
                raise LookupError(f"no job {ref!r}")
            return _record(row)

    def exclusive(self, name: str) -> contextlib.AbstractContextManager:
        return named_lock(self._engine, name)

    def save_artifact(self, name: str, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        """Also recorded in the database with its size and sha256 (replaced when a resumed job
        rewrites it)."""
        path = write_artifact(self.directory, name, tensors, meta)
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        with self._sessions() as session:
            self._queue.record_artifact(
                session,
                job_id=self.job_id,
                name=name,
                path=str(path),
                size=path.stat().st_size,
                sha256=digest,
                meta=meta,
            )
        return path


def _record(row) -> JobRecord:
    directory = Path(row.artifact_dir) if row.artifact_dir else None
    return JobRecord(row.id, row.kind, row.spec, row.state, row.result, directory)


RECORD = "job.json"  # a local run's record in its folder, so that a later run can refer to it


class LocalContext(_Folder):
    """A job run without the queue, in a folder: checkpoints, outputs, a log file and job.json.

    Alone or as one rank of several under torchrun: rank 0 logs and writes, every rank reads the
    checkpoint to resume. Nothing to cancel from: stop the process to stop the run, start it again
    to resume. `lookup` finds the jobs it refers to (by id in a store); a folder written by another
    local run is found by its path.
    """

    def __init__(
        self,
        spec: dict[str, Any],
        directory: Path,
        settings: Settings,
        lookup: Callable[[str], JobRecord] | None = None,
    ):
        self.spec = spec
        self.directory = directory
        self.job_id = str(directory.resolve())
        self.settings = settings
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self._lookup = lookup

    def step(self, step: int, steps: int, progress: float | None = None) -> None:
        pass

    def status(self, message: str, progress: float | None = None) -> None:
        pass

    def log(self, message: str) -> None:
        if self.rank == 0:
            print(message, flush=True)
            with open(self.directory / "log.txt", "a") as f:
                f.write(message + "\n")

    def job(self, ref: str) -> JobRecord:
        folder = Path(ref)
        if (folder / RECORD).is_file():
            return read_record(folder)
        if self._lookup is None:
            raise LookupError(f"{ref!r} is no folder of a local run (no {RECORD}) and no store is configured")
        return self._lookup(ref)

    def exclusive(self, name: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def save_artifact(self, name: str, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        return write_artifact(self.directory, name, tensors, meta)

    def write_record(self, kind: str, state: str, result: dict[str, Any] | None) -> None:
        """job.json: what `job(<this folder>)` reads back in a later run."""
        record = {"kind": kind, "spec": self.spec, "state": state, "result": result}
        with atomic_path(self.directory / RECORD) as tmp:
            tmp.write_text(json.dumps(record, indent=1))


def read_record(folder: Path) -> JobRecord:
    record = json.loads((folder / RECORD).read_text())
    resolved = folder.resolve()
    return JobRecord(
        str(resolved), record["kind"], record["spec"], record["state"], record["result"], resolved
    )
