"""What a running job sees of the machinery: its spec, its folder, progress, cancel, checkpoints, logs.

A job runner is a plain function `run(ctx) -> result dict` with a flat training loop that calls
`ctx.step(step, steps)` at the top of every step (that is where a cancel or a shutdown stops it),
saves a checkpoint every `checkpoint_every` steps and resumes from `ctx.load_checkpoint()`.
"""

import hashlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from services.trainer import queue
from services.trainer.checkpoint import (
    NO_OPTIMIZER,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_artifact,
)
from services.trainer.jobs import get_job
from services.trainer.models import Job
from shared.settings import Settings


class JobStopped(Exception):
    """Raised by JobContext.step() to leave the job's loop; `outcome` says what becomes of the job."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome  # "cancelled", "released" (back to the queue) or "lost" (not ours any more)


class JobContext:
    def __init__(
        self,
        *,
        job_id: str,
        spec: dict[str, Any],
        attempt: int,
        directory: Path,
        settings: Settings,
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
        self.step_done = 0  # read by the heartbeat thread
        self.steps: int | None = None
        self.lost = threading.Event()  # set by the heartbeat when the job was taken from this worker
        self._sessions = sessions
        self._stopping = stopping

    def step(self, step: int, steps: int) -> None:
        """Call at the top of each step with the steps done so far: records progress (the heartbeat
        saves it) and raises JobStopped when the job was cancelled or the worker is shutting down."""
        self.step_done, self.steps = step, steps
        if self.lost.is_set():
            raise JobStopped("lost", "the job was re-queued by another worker (this one was taken for dead)")
        if self._stopping.is_set():
            raise JobStopped("released", f"worker shutting down at step {step}: back to the queue")
        with self._sessions() as session:
            if queue.cancel_requested(session, job_id=self.job_id):
                raise JobStopped("cancelled", f"cancel requested; stopped at step {step}")

    def job(self, job_id: str) -> Job | None:
        """Another job's row (e.g. the distill job a score job reads)."""
        with self._sessions() as session:
            return get_job(session, job_id=job_id)

    def log(self, message: str) -> None:
        """A line in the job's log (GET /v1/jobs/{id}/log)."""
        with self._sessions() as session:
            queue.append_log(session, job_id=self.job_id, attempt=self.attempt, message=message)

    @property
    def checkpoint_dir(self) -> Path:
        return self.directory / "checkpoint"

    def save_checkpoint(
        self,
        *,
        step: int,
        model: Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer | None = None,
        extra: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Checkpoint after `step` steps; the job's spec is stored with it as its config."""
        save_checkpoint(
            self.checkpoint_dir,
            step=step,
            config=self.spec,
            model=model,
            optimizer=optimizer.state_dict() if optimizer else NO_OPTIMIZER,
            extra=extra,
        )

    def load_checkpoint(self) -> Checkpoint | None:
        """The job's last checkpoint (after a crash or a shutdown), or None on a fresh start."""
        checkpoint = load_checkpoint(self.checkpoint_dir)
        if checkpoint is None:
            return None
        if checkpoint.config != self.spec:
            raise RuntimeError(f"the checkpoint in {self.checkpoint_dir} was written for another spec")
        self.log(f"resuming from the checkpoint at step {checkpoint.step}")
        return checkpoint

    def save_artifact(self, name: str, tensors: Mapping[str, torch.Tensor], meta: dict[str, Any]) -> Path:
        """An output of the job: <dir>/<name>.safetensors (with meta as JSON beside it), recorded in the
        database with its size and sha256. Written atomically, and replaced when a resumed job rewrites it."""
        path = write_artifact(self.directory, name, tensors, meta)
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        with self._sessions() as session:
            queue.record_artifact(
                session,
                job_id=self.job_id,
                name=name,
                path=str(path),
                size=path.stat().st_size,
                sha256=digest,
                meta=meta,
            )
        return path
