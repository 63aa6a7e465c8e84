"""/v1/jobs: submit a job (idempotently), read it, list jobs, cancel one, fetch its result."""

from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Response

from services.trainer.deps import QUEUE, JobId, found
from services.trainer.kinds import KINDS, JobSpec
from services.trainer.memory import check_memory
from shared.api import DB_INT_MAX, SessionDep, SettingsDep, TokenDep
from shared.errors import ApiError, invalid
from shared.schemas.jobs import Job, JobPage, JobResult, JobState, spec_digest

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=201,
    dependencies=[TokenDep],
    summary="Submit a job",
    responses={
        200: {"model": Job, "description": "Replayed: a job with this Idempotency-Key and body exists"}
    },
)
def submit(
    spec: Annotated[JobSpec, Body()],
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="Retry-safe submission: the same key and body return the job already made.",
        ),
    ] = None,
) -> Job:
    spec = KINDS[spec.kind].check(spec, settings, session)
    check_memory(spec, settings, session)
    job, created = QUEUE.submit(session, spec=spec, idempotency_key=idempotency_key)
    if not created:
        if job.spec_digest != spec_digest(spec):
            raise invalid("Idempotency-Key", "already used for a different request", job_id=job.id)
        response.status_code = 200
    return Job.model_validate(job)


@router.get("", summary="List jobs, newest first")
def list_jobs(
    session: SessionDep,
    state: Annotated[JobState | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
) -> JobPage:
    page, total = QUEUE.page(session, state=state, kind=kind, limit=limit, offset=offset)
    return JobPage(jobs=[Job.model_validate(job) for job in page], total=total)


@router.get("/{job_id}", summary="A job: state, progress, message, ETA, attempt, heartbeat, error")
def get_job(job_id: JobId, session: SessionDep) -> Job:
    return Job.model_validate(found(QUEUE.get(session, job_id=job_id), job_id))


@router.post(
    "/{job_id}/cancel",
    dependencies=[TokenDep],
    summary="Cancel a job: at once when queued; a running job stops at its next step",
    responses={409: {"description": "The job already succeeded or failed"}},
)
def cancel_job(job_id: JobId, session: SessionDep) -> Job:
    job = found(QUEUE.cancel(session, job_id=job_id), job_id)
    if job.state in ("succeeded", "failed"):
        raise ApiError(409, f"job {job_id} already {job.state}", details={"state": job.state})
    return Job.model_validate(job)


@router.get(
    "/{job_id}/result",
    summary="The result of a succeeded job (its kind's result model)",
    responses={409: {"description": "The job has not succeeded (yet)"}},
)
def get_result(job_id: JobId, session: SessionDep) -> JobResult:
    job = found(QUEUE.get(session, job_id=job_id), job_id)
    if job.state != "succeeded":
        message = f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else "")
        raise ApiError(409, message, details={"state": job.state})
    return JobResult(job_id=job.id, kind=job.kind, result=job.result or {})
