"""Jobs: the state, progress and heartbeat of LUT builds and validations."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path

from services.profiler import store
from services.profiler.deps import StaleAfterDep
from shared.api import SessionDep
from shared.errors import not_found
from shared.schemas.lut import Job, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("", summary="Jobs, oldest first, optionally of one kind or state")
def list_jobs(
    session: SessionDep,
    stale_after_s: StaleAfterDep,
    kind: Literal["build", "validate"] | None = None,
    state: JobState | None = None,
) -> list[Job]:
    return store.list_jobs(session, stale_after_s=stale_after_s, kind=kind, state=state)


@router.get("/{job_id}", summary="One job: state, progress, message, result ids", responses={404: {}})
def get_job(
    job_id: Annotated[str, Path(min_length=1, max_length=64)],
    session: SessionDep,
    stale_after_s: StaleAfterDep,
) -> Job:
    job = store.get_job(session, job_id=job_id, stale_after_s=stale_after_s)
    if job is None:
        raise not_found("job", job_id)
    return job
