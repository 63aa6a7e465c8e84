"""What workers do to job rows: claim, heartbeat, finish, give back, and recover the lost.

Every change a worker makes is guarded by `worker == me AND state == 'running'`: a worker that was
taken for dead (its job re-queued and claimed by another) can no longer write to that job.
"""

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.trainer.models import Artifact, Job, JobLogLine, utcnow


def claim_job(session: Session, *, worker: str, kinds: Collection[str]) -> Job | None:
    """Take the oldest queued job of one of `kinds`, atomically, or None.

    One statement on both backends: PostgreSQL locks the chosen row with FOR UPDATE SKIP LOCKED, so
    concurrent workers pick different rows; SQLite runs the UPDATE ... RETURNING under its single
    writer lock (the FOR UPDATE is not rendered there). The outer `state == 'queued'` re-checks the
    row, so a job cancelled in between is not claimed.
    """
    oldest = (
        select(Job.id)
        .where(Job.state == "queued", Job.kind.in_(kinds))
        .order_by(Job.created_at, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    now = utcnow()
    claimed = session.scalars(
        update(Job)
        .where(Job.id == oldest, Job.state == "queued")
        .values(state="running", worker=worker, attempt=Job.attempt + 1, heartbeat_at=now, started_at=now)
        .returning(Job.id)
    ).one_or_none()
    session.commit()
    return session.get(Job, claimed, populate_existing=True) if claimed is not None else None


def _mine(job_id: str, worker: str):
    return update(Job).where(Job.id == job_id, Job.worker == worker, Job.state == "running")


def heartbeat(session: Session, *, job_id: str, worker: str, step: int, steps: int | None) -> bool:
    """Record that the job is alive and how far it got; False when the job is no longer this worker's."""
    updated = session.execute(_mine(job_id, worker).values(heartbeat_at=utcnow(), step=step, steps=steps))
    session.commit()
    return updated.rowcount == 1


def set_artifact_dir(session: Session, *, job_id: str, worker: str, path: str) -> bool:
    updated = session.execute(_mine(job_id, worker).values(artifact_dir=path))
    session.commit()
    return updated.rowcount == 1


def cancel_requested(session: Session, *, job_id: str) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def finish_job(
    session: Session,
    *,
    job_id: str,
    worker: str,
    state: str,
    step: int,
    steps: int | None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Mark the job succeeded, failed or cancelled; False when it was no longer this worker's."""
    updated = session.execute(
        _mine(job_id, worker).values(
            state=state,
            step=step,
            steps=steps,
            result=result,
            error=error,
            finished_at=utcnow(),
            heartbeat_at=utcnow(),
        )
    )
    session.commit()
    return updated.rowcount == 1


def release_job(session: Session, *, job_id: str, worker: str, step: int) -> bool:
    """Give a job back to the queue (the worker is shutting down); a graceful stop costs no attempt."""
    updated = session.execute(
        _mine(job_id, worker).values(state="queued", worker=None, step=step, attempt=Job.attempt - 1)
    )
    session.commit()
    return updated.rowcount == 1


def recover_stale(session: Session, *, stale_before: datetime, max_attempts: int) -> dict[str, list[str]]:
    """Jobs whose worker stopped heartbeating before `stale_before`: cancelled if a cancel was asked,
    failed once `max_attempts` workers were lost on them, otherwise back in the queue (the next worker
    resumes from the last checkpoint). Returns the ids per new state."""
    stale = (Job.state == "running", Job.heartbeat_at < stale_before)
    now = utcnow()
    outcomes = {
        "cancelled": update(Job)
        .where(*stale, Job.cancel_requested)
        .values(state="cancelled", finished_at=now, error="cancelled; its worker was lost"),
        "failed": update(Job)
        .where(*stale, Job.attempt >= max_attempts)
        .values(state="failed", finished_at=now, error=f"gave up: {max_attempts} workers were lost on it"),
        "queued": update(Job).where(*stale).values(state="queued", worker=None),
    }
    changed: dict[str, list[str]] = {}
    for state, stmt in outcomes.items():
        rows = session.execute(stmt.returning(Job.id, Job.attempt)).all()
        changed[state] = [job_id for job_id, _ in rows]
        for job_id, attempt in rows:
            message = f"worker lost (its heartbeat went stale): {state}"
            session.add(JobLogLine(job_id=job_id, attempt=attempt, message=message))
    session.commit()
    return changed


def stale_cutoff(stale_s: float) -> datetime:
    return utcnow() - timedelta(seconds=stale_s)


def append_log(session: Session, *, job_id: str, attempt: int, message: str) -> None:
    session.add(JobLogLine(job_id=job_id, attempt=attempt, message=message))
    session.commit()


def record_artifact(
    session: Session, *, job_id: str, name: str, path: str, size: int, sha256: str, meta: dict[str, Any]
) -> None:
    """Insert or replace the row of one artifact (a resumed job writes its outputs again)."""
    artifact = session.scalars(
        select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)
    ).one_or_none() or Artifact(job_id=job_id, name=name)
    artifact.path, artifact.bytes, artifact.sha256, artifact.meta = path, size, sha256, meta
    artifact.created_at = utcnow()
    session.add(artifact)
    session.commit()
