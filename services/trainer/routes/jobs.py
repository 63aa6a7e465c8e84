"""POST /v1/jobs: submit a trainer job (idempotently). Reading, listing, cancelling, logs and results
are every service's job routes (services/jobs/routes.py)."""

from typing import Annotated

from fastapi import APIRouter, Body, Header, Response

from services.trainer.deps import QUEUE
from services.trainer.kinds import KINDS
from services.trainer.memory import check_memory
from shared.api import CheckedRoute, SessionDep, SettingsDep, TokenDep
from shared.errors import invalid
from shared.schemas.jobs import Job, spec_digest
from shared.schemas.trainer import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=CheckedRoute)


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
