"""What the API does with jobs: submit, read, list, cancel. Keyword-only; None when the job is absent."""

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.trainer.models import Artifact, Job, JobLogLine, utcnow
from shared.schemas.jobs import spec_digest


def submit_job(session: Session, *, spec: BaseModel, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Queue a job; returns (job, created). With a key already used, returns that job, not created;
    the caller compares `spec_digest` to tell a replay from a different request under the same key."""
    if idempotency_key is not None and (existing := _by_key(session, idempotency_key)) is not None:
        return existing, False
    job = Job(
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
        existing = _by_key(session, idempotency_key) if idempotency_key is not None else None
        if existing is None:
            raise
        return existing, False
    return job, True


def _by_key(session: Session, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.idempotency_key == key)).one_or_none()


def get_job(session: Session, *, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(
    session: Session, *, state: str | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Job], int]:
    """Newest first; also the number of jobs matching the filters."""
    query = select(Job)
    if state is not None:
        query = query.where(Job.state == state)
    if kind is not None:
        query = query.where(Job.kind == kind)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    jobs = session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return list(jobs), total or 0


def cancel_job(session: Session, *, job_id: str) -> Job | None:
    """A queued job is cancelled at once; a running one is asked to stop (its worker does, within a
    step, and marks it cancelled). Finished jobs stay as they are. Each change is one guarded UPDATE,
    so a worker claiming the job at the same moment either gets it first (then: a request) or not at all."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "queued")
        .values(state="cancelled", cancel_requested=True, finished_at=now)
    )
    session.execute(update(Job).where(Job.id == job_id, Job.state == "running").values(cancel_requested=True))
    session.commit()
    job = session.get(Job, job_id)
    if job is not None:
        session.refresh(job)
    return job


def job_log(session: Session, *, job_id: str, tail: int) -> list[JobLogLine] | None:
    """The last `tail` log lines of a job, oldest first."""
    if session.get(Job, job_id) is None:
        return None
    lines = session.scalars(
        select(JobLogLine).where(JobLogLine.job_id == job_id).order_by(JobLogLine.id.desc()).limit(tail)
    ).all()
    return list(reversed(lines))


def list_artifacts(session: Session, *, job_id: str) -> list[Artifact] | None:
    if session.get(Job, job_id) is None:
        return None
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))
