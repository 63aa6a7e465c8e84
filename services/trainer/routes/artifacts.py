"""/v1/jobs/{id}/artifacts: the files a job wrote (safetensors + JSON), with size and sha256."""

from fastapi import APIRouter

from services.trainer import jobs
from services.trainer.routes.jobs import JobId, found
from shared.api import SessionDep
from shared.schemas.jobs import Artifact

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


@router.get("/{job_id}/artifacts", summary="The outputs a job wrote under its artifact folder")
def list_artifacts(job_id: JobId, session: SessionDep) -> list[Artifact]:
    artifacts = found(jobs.list_artifacts(session, job_id=job_id), job_id)
    return [Artifact.model_validate(a) for a in artifacts]
