"""POST /v1/plans: what a job would take (peak memory per process, FLOPs, expected time on the
trainer's device, the processes it needs), checked like a submission and queued nowhere. A POST
because it takes a job spec as its body; it changes nothing."""

from typing import Annotated

from fastapi import APIRouter, Body

from services.trainer.kinds import KINDS
from services.trainer.memory import plan_job
from shared.api import CheckedRoute, SessionDep, SettingsDep
from shared.errors import invalid
from shared.schemas.trainer import JobPlan, JobSpec

router = APIRouter(prefix="/v1/plans", tags=["plans"], route_class=CheckedRoute)


@router.post("", summary="Plan a job")
def plan(spec: Annotated[JobSpec, Body()], session: SessionDep, settings: SettingsDep) -> JobPlan:
    spec = KINDS[spec.kind].check(spec, settings, session)
    job = plan_job(spec, settings, session, timed=True)
    if job is None:
        raise invalid("body", "the model of this job cannot be told from its config.json")
    return job
