"""/v1/jobs: the one face of every service's jobs, whatever their kind: list, read, cancel, log, result.

A service mounts `jobs_router(queue, recovery)` and adds its own ways to submit (the trainer's
POST /v1/jobs, the profiler's POST /v1/luts and validations). Before it answers, a route takes back
the jobs whose worker was lost by the rule the service's workers apply (`recovery`), so that a reader
sees a lost job as queued again or failed at once, not after an idle worker next looks.
"""

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Path, Query

from services.jobs.queue import JobQueue, Recovery
from shared.api import DB_INT_MAX, SessionDep, SettingsDep, TokenDep
from shared.errors import ApiError, not_found
from shared.schemas.jobs import Job, JobLog, JobPage, JobResult, JobState, LogLine
from shared.settings import Settings

T = TypeVar("T")

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job's id.")]


def found(value: T | None, job_id: str) -> T:
    """What a queue function returned for a job, or a 404 when the job does not exist."""
    if value is None:
        raise not_found("job", job_id)
    return value


def jobs_router(queue: JobQueue, recovery: Callable[[Settings], Recovery]) -> APIRouter:
    """The job routes on one service's queue; `recovery` gives its rule for lost workers."""

    def recover_lost(session: SessionDep, settings: SettingsDep) -> None:
        queue.recover(session, recovery(settings))

    router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(recover_lost)])

    @router.get("", summary="List jobs, newest first")
    def list_jobs(
        session: SessionDep,
        state: Annotated[JobState | None, Query()] = None,
        kind: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=DB_INT_MAX)] = 0,
    ) -> JobPage:
        page, total = queue.page(session, state=state, kind=kind, limit=limit, offset=offset)
        return JobPage(jobs=[Job.model_validate(job) for job in page], total=total)

    @router.get("/{job_id}", summary="A job: state, progress, message, ETA, attempt, heartbeat, error")
    def get_job(job_id: JobId, session: SessionDep) -> Job:
        return Job.model_validate(found(queue.get(session, job_id=job_id), job_id))

    @router.post(
        "/{job_id}/cancel",
        dependencies=[TokenDep],
        summary="Cancel a job: at once when queued; a running job stops at its next step or status",
        responses={409: {"description": "The job already succeeded or failed"}},
    )
    def cancel_job(job_id: JobId, session: SessionDep) -> Job:
        job = found(queue.cancel(session, job_id=job_id), job_id)
        if job.state in ("succeeded", "failed"):
            raise ApiError(409, f"job {job_id} already {job.state}", details={"state": job.state})
        return Job.model_validate(job)

    @router.get("/{job_id}/log", summary="Progress and the last lines of a job's log")
    def get_log(
        job_id: JobId, session: SessionDep, tail: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> JobLog:
        lines = found(queue.log(session, job_id=job_id, tail=tail), job_id)
        job = queue.get(session, job_id=job_id)
        return JobLog(
            job_id=job.id,
            state=job.state,
            step=job.step,
            steps=job.steps,
            progress=job.progress,
            message=job.message,
            eta_s=job.eta_s,
            lines=[LogLine.model_validate(line) for line in lines],
        )

    @router.get(
        "/{job_id}/result",
        summary="The result of a succeeded job (its kind's result model)",
        responses={409: {"description": "The job has not succeeded (yet)"}},
    )
    def get_result(job_id: JobId, session: SessionDep) -> JobResult:
        job = found(queue.get(session, job_id=job_id), job_id)
        if job.state != "succeeded":
            message = f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else "")
            raise ApiError(409, message, details={"state": job.state})
        return JobResult(job_id=job.id, kind=job.kind, result=job.result or {})

    return router
