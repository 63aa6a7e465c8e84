"""/v1/jobs: submit a job (idempotently), read it, list jobs, cancel one, fetch its result."""

from typing import Annotated, TypeVar

from fastapi import APIRouter, Body, Header, Path, Query, Response

from services.trainer import jobs
from services.trainer.inputs import check_inputs
from shared.api import SessionDep, SettingsDep, TokenDep
from shared.errors import ApiError, invalid, not_found
from shared.schemas.jobs import Job, JobPage, JobResult, JobSpec, JobState, spec_digest

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

T = TypeVar("T")

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job's id.")]


def found(value: T | None, job_id: str) -> T:
    """What a data function returned for a job, or a 404 when the job does not exist."""
    if value is None:
        raise not_found("job", job_id)
    return value


@router.post(
    "",
    status_code=201,
    dependencies=[TokenDep],
    summary="Submit a job",
    responses={200: {"description": "Replayed: a job with this Idempotency-Key and body already exists"}},
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
    spec = check_inputs(spec, settings, session)
    job, created = jobs.submit_job(session, spec=spec, idempotency_key=idempotency_key)
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
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobPage:
    page, total = jobs.list_jobs(session, state=state, kind=kind, limit=limit, offset=offset)
    return JobPage(jobs=[Job.model_validate(job) for job in page], total=total)


@router.get("/{job_id}", summary="A job: state, progress, attempt, heartbeat, error")
def get_job(job_id: JobId, session: SessionDep) -> Job:
    return Job.model_validate(found(jobs.get_job(session, job_id=job_id), job_id))


@router.post(
    "/{job_id}/cancel",
    dependencies=[TokenDep],
    summary="Cancel a job: at once when queued; a running job stops at its next step",
    responses={409: {"description": "The job already succeeded or failed"}},
)
def cancel_job(job_id: JobId, session: SessionDep) -> Job:
    job = found(jobs.cancel_job(session, job_id=job_id), job_id)
    if job.state in ("succeeded", "failed"):
        raise ApiError(409, f"job {job_id} already {job.state}", details={"state": job.state})
    return Job.model_validate(job)


@router.get(
    "/{job_id}/result",
    summary="The result of a succeeded job",
    responses={409: {"description": "The job has not succeeded (yet)"}},
)
def get_result(job_id: JobId, session: SessionDep) -> JobResult:
    job = found(jobs.get_job(session, job_id=job_id), job_id)
    if job.state != "succeeded":
        message = f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else "")
        raise ApiError(409, message, details={"state": job.state})
    return JobResult(job_id=job.id, kind=job.kind, result=job.result or {})
