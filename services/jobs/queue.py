"""What the API and the workers do to one service's job rows.

The API submits (idempotently), reads, lists and cancels. Workers claim, heartbeat, finish, give back,
and recover the lost. Every change a worker makes is guarded by `worker == me AND state == 'running'`:
a worker that was taken for dead (its job re-queued and claimed by another) can no longer write to
that job. Each write is one statement and commits at once, so no lock is held across a job's steps.
"""

import os
import socket
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.jobs.tables import ArtifactColumns, JobColumns, JobLogColumns, JobTables, utcnow
from shared.schemas.jobs import spec_digest

Save = Callable[[Session], dict[str, Any]]


@dataclass(frozen=True)
class Recovery:
    """A service's rule for jobs whose worker was lost, applied alike by its workers and its readers."""

    stale_s: float  # a running job whose heartbeat is older than this lost its worker
    max_attempts: int  # a job whose worker was lost this many times is failed, not queued again


class JobQueue:
    def __init__(self, tables: JobTables):
        self.Job, self.Log, self.Artifact = tables.job, tables.log, tables.artifact

    # -- the API's side -----------------------------------------------------------------------

    def submit(
        self, session: Session, *, spec: BaseModel, idempotency_key: str | None = None
    ) -> tuple[JobColumns, bool]:
        """Queue a job; returns (job, created). With a key already used, returns that job, not created;
        the caller compares `spec_digest` to tell a replay from a different request under the same key."""
        if idempotency_key is not None and (existing := self._by_key(session, idempotency_key)) is not None:
            return existing, False
        job = self.Job(
            kind=spec.kind,
            spec=spec.model_dump(mode="json"),
            spec_digest=spec_digest(spec),
            idempotency_key=idempotency_key,
        )
        session.add(job)
        try:
            session.commit()
        except IntegrityError:  # the same key, submitted at the same moment by someone else
            session.rollback()
            existing = self._by_key(session, idempotency_key) if idempotency_key is not None else None
            if existing is None:
                raise
            return existing, False
        return job, True

    def _by_key(self, session: Session, key: str) -> JobColumns | None:
        return session.scalars(select(self.Job).where(self.Job.idempotency_key == key)).one_or_none()

    def get(self, session: Session, *, job_id: str) -> JobColumns | None:
        return session.get(self.Job, job_id)

    def page(
        self,
        session: Session,
        *,
        state: str | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[JobColumns], int]:
        """Newest first; also the number of jobs matching the filters."""
        query = select(self.Job)
        if state is not None:
            query = query.where(self.Job.state == state)
        if kind is not None:
            query = query.where(self.Job.kind == kind)
        total = session.scalar(select(func.count()).select_from(query.subquery()))
        ordered = query.order_by(self.Job.created_at.desc(), self.Job.id)
        return list(session.scalars(ordered.limit(limit).offset(offset))), total or 0

    def cancel(self, session: Session, *, job_id: str) -> JobColumns | None:
        """A queued job is cancelled at once; a running one is asked to stop (its worker does, within a
        step, and marks it cancelled). Finished jobs stay as they are. Each change is one guarded
        UPDATE, so a worker claiming the job at the same moment either gets it first (then: a request)
        or not at all."""
        Job = self.Job
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == "queued")
            .values(state="cancelled", cancel_requested=True, finished_at=utcnow(), message="cancelled")
        )
        session.execute(
            update(Job).where(Job.id == job_id, Job.state == "running").values(cancel_requested=True)
        )
        session.commit()
        job = session.get(Job, job_id)
        if job is not None:
            session.refresh(job)
        return job

    def log(self, session: Session, *, job_id: str, tail: int) -> list[JobLogColumns] | None:
        """The last `tail` log lines of a job, oldest first."""
        if session.get(self.Job, job_id) is None:
            return None
        lines = session.scalars(
            select(self.Log).where(self.Log.job_id == job_id).order_by(self.Log.id.desc()).limit(tail)
        ).all()
        return list(reversed(lines))

    def artifacts(self, session: Session, *, job_id: str) -> list[ArtifactColumns] | None:
        if session.get(self.Job, job_id) is None:
            return None
        query = select(self.Artifact).where(self.Artifact.job_id == job_id).order_by(self.Artifact.name)
        return list(session.scalars(query))

    # -- the workers' side --------------------------------------------------------------------

    def claim(
        self, session: Session, *, worker: str, kinds: Collection[str], job_id: str | None = None
    ) -> JobColumns | None:
        """Take the oldest queued job of one of `kinds` (or the queued job `job_id`), atomically.

        One statement on both backends: PostgreSQL locks the chosen row with FOR UPDATE SKIP LOCKED, so
        concurrent workers pick different rows; SQLite runs the UPDATE ... RETURNING under its single
        writer lock (the FOR UPDATE is not rendered there). The outer `state == 'queued'` re-checks the
        row, so a job cancelled in between is not claimed.
        """
        Job = self.Job
        wanted = select(Job.id).where(Job.state == "queued", Job.kind.in_(kinds))
        if job_id is not None:
            wanted = wanted.where(Job.id == job_id)
        oldest = wanted.order_by(Job.created_at, Job.id).limit(1).with_for_update(skip_locked=True)
        now = utcnow()
        claimed = session.scalars(
            update(Job)
            .where(Job.id == oldest.scalar_subquery(), Job.state == "queued")
            .values(
                state="running",
                worker=worker,
                attempt=Job.attempt + 1,
                heartbeat_at=now,
                started_at=now,
                attempt_progress=Job.progress,
                message="started",
            )
            .returning(Job.id)
        ).one_or_none()
        session.commit()
        return session.get(Job, claimed, populate_existing=True) if claimed is not None else None

    def _mine(self, job_id: str, worker: str):
        Job = self.Job
        return update(Job).where(Job.id == job_id, Job.worker == worker, Job.state == "running")

    def heartbeat(
        self,
        session: Session,
        *,
        job_id: str,
        worker: str,
        step: int,
        steps: int | None,
        progress: float | None = None,
        message: str | None = None,
    ) -> bool:
        """Record that the job is alive and how far it got; False when it is no longer this worker's."""
        values: dict[str, Any] = {"heartbeat_at": utcnow(), "step": step, "steps": steps}
        if progress is not None:
            values["progress"] = min(1.0, max(0.0, progress))
        if message is not None:
            values["message"] = message[:500]
        updated = session.execute(self._mine(job_id, worker).values(**values))
        session.commit()
        return updated.rowcount == 1

    def set_artifact_dir(self, session: Session, *, job_id: str, worker: str, path: str) -> bool:
        updated = session.execute(self._mine(job_id, worker).values(artifact_dir=path))
        session.commit()
        return updated.rowcount == 1

    def cancel_requested(self, session: Session, *, job_id: str) -> bool:
        return bool(session.scalar(select(self.Job.cancel_requested).where(self.Job.id == job_id)))

    def finish(
        self,
        session: Session,
        *,
        job_id: str,
        worker: str,
        state: str,
        step: int,
        steps: int | None,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        save: Save | None = None,
    ) -> bool:
        """Mark the job succeeded, failed or cancelled; False (and nothing written) when it was no
        longer this worker's. `save` writes the job's outputs in the same transaction and returns its
        result, so the outputs and the job's success land together or not at all."""
        if save is not None:
            result = save(session)
        now = utcnow()
        updated = session.execute(
            self._mine(job_id, worker).values(
                state=state,
                step=step,
                steps=steps,
                progress=1.0 if state == "succeeded" else self.Job.progress,
                message=state,
                result=result,
                error=error,
                finished_at=now,
                heartbeat_at=now,
            )
        )
        if updated.rowcount != 1:
            session.rollback()
            return False
        session.commit()
        return True

    def release(self, session: Session, *, job_id: str, worker: str, step: int) -> bool:
        """Give a job back to the queue (the worker is shutting down); a graceful stop costs no attempt.
        A job whose cancel was asked is cancelled instead: nobody wants it run again."""
        Job = self.Job
        asked = Job.cancel_requested.is_(True)
        updated = session.execute(
            self._mine(job_id, worker).values(
                state=case((asked, "cancelled"), else_="queued"),
                worker=None,
                step=step,
                attempt=Job.attempt - 1,
                message=case((asked, "cancelled"), else_="released"),
                error=case((asked, "cancelled: its worker stopped before the job did"), else_=Job.error),
                finished_at=case((asked, utcnow()), else_=Job.finished_at),
            )
        )
        session.commit()
        return updated.rowcount == 1

    def requeue(
        self, session: Session, *, job_id: str, worker: str, step: int, error: str, max_attempts: int
    ) -> str | None:
        """A job one of whose processes died (killed, out of memory): back in the queue, the attempt
        spent, as when a whole worker is lost (the next attempt resumes from the last checkpoint);
        failed once `max_attempts` were spent, cancelled when a cancel was asked. The new state, or
        None when the job was no longer this worker's."""
        Job = self.Job
        asked, spent = Job.cancel_requested.is_(True), Job.attempt >= max_attempts
        state = case((asked, "cancelled"), (spent, "failed"), else_="queued")
        finished = case((asked | spent, utcnow()), else_=Job.finished_at)
        why = case(
            (asked, f"cancelled; {error}"),
            (spent, f"{error}: gave up, {max_attempts} attempts were lost"),
            else_=Job.error,
        )
        new = session.scalars(
            self._mine(job_id, worker)
            .values(state=state, worker=None, step=step, message=state, error=why, finished_at=finished)
            .returning(Job.state)
        ).one_or_none()
        session.commit()
        return new

    def recover_stale(
        self, session: Session, *, stale_before: datetime, max_attempts: int
    ) -> dict[str, list[str]]:
        """Jobs whose worker was lost: its process is gone (a worker of this machine whose pid no longer
        runs: seen at once), or it stopped heartbeating before `stale_before` (any machine). Such a job
        is cancelled if a cancel was asked, failed once `max_attempts` workers were lost on it,
        otherwise back in the queue (the next worker resumes from the last checkpoint). Returns the
        ids per new state."""
        Job = self.Job
        running = Job.state == "running"
        since = stale_before.isoformat(timespec="seconds")
        causes = [
            (
                "its heartbeat went stale",
                f"no heartbeat since before {since}",
                Job.heartbeat_at < stale_before,
            )
        ]
        if gone := self.gone_workers(session):
            causes.insert(0, ("its process is gone", "its process is gone", Job.worker.in_(gone)))
        now = utcnow()
        changed: dict[str, list[str]] = {"cancelled": [], "failed": [], "queued": []}
        for cause, why, lost in causes:
            outcomes = {
                "cancelled": update(Job)
                .where(running, lost, Job.cancel_requested)
                .values(state="cancelled", finished_at=now, error=f"cancelled; {why}: its worker was lost"),
                "failed": update(Job)
                .where(running, lost, Job.attempt >= max_attempts)
                .values(
                    state="failed",
                    finished_at=now,
                    error=f"{why}: gave up, {max_attempts} workers were lost on it",
                ),
                "queued": update(Job).where(running, lost).values(state="queued", worker=None),
            }
            for state, stmt in outcomes.items():
                rows = session.execute(stmt.values(message=state).returning(Job.id, Job.attempt)).all()
                changed[state] += [job_id for job_id, _ in rows]
                for job_id, attempt in rows:
                    message = f"worker lost ({cause}): {state}"
                    session.add(self.Log(job_id=job_id, attempt=attempt, message=message))
        session.commit()
        return changed

    def recover(self, session: Session, recovery: Recovery) -> dict[str, list[str]]:
        """recover_stale by a service's rule, as of now."""
        return self.recover_stale(
            session, stale_before=stale_cutoff(recovery.stale_s), max_attempts=recovery.max_attempts
        )

    def gone_workers(self, session: Session) -> list[str]:
        """Workers of running jobs that ran on this machine and whose process no longer runs."""
        workers = session.scalars(select(self.Job.worker).where(self.Job.state == "running").distinct())
        return [w for w in workers if w is not None and process_gone(w)]

    def append_log(self, session: Session, *, job_id: str, attempt: int, message: str) -> None:
        session.add(self.Log(job_id=job_id, attempt=attempt, message=message))
        session.commit()

    def record_artifact(
        self, session: Session, *, job_id: str, name: str, path: str, size: int, sha256: str, meta: dict
    ) -> None:
        """Insert or replace the row of one artifact (a resumed job writes its outputs again)."""
        Artifact = self.Artifact
        artifact = session.scalars(
            select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
        ).one_or_none() or Artifact(job_id=job_id, name=name)
        artifact.path, artifact.bytes, artifact.sha256, artifact.meta = path, size, sha256, meta
        artifact.created_at = utcnow()
        session.add(artifact)
        session.commit()


def worker_name() -> str:
    """host:pid:random, unique per worker process; host and pid tell whether it still runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def process_gone(worker: str) -> bool:
    """Whether a worker named by worker_name() ran on this machine and its process has ended."""
    host, _, rest = worker.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's (or a name of another form): only its heartbeat tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's process has that pid now... or it is ours under another user
    try:  # a zombie (dead, not yet reaped by its parent) still answers the signal
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def stale_cutoff(stale_s: float) -> datetime:
    return utcnow() - timedelta(seconds=stale_s)
