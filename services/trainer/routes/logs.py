"""/v1/jobs/{id}/log: a job's progress and the tail of its log."""

from typing import Annotated

from fastapi import APIRouter, Query

from services.trainer.deps import QUEUE, JobId, found
from shared.api import SessionDep
from shared.schemas.jobs import JobLog, LogLine

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}/log", summary="Progress and the last lines of a job's log")
def get_log(job_id: JobId, session: SessionDep, tail: Annotated[int, Query(ge=1, le=1000)] = 100) -> JobLog:
    lines = found(QUEUE.log(session, job_id=job_id, tail=tail), job_id)
    job = QUEUE.get(session, job_id=job_id)
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
