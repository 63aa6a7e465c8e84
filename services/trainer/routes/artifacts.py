"""/v1/jobs/{id}/artifacts and /files: what a job wrote under its folder, listed and fetched."""

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from services.trainer.deps import QUEUE, JobId, found
from shared.api import SessionDep
from shared.errors import ApiError, not_found
from shared.paths import confine
from shared.schemas.jobs import Artifact

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])


@router.get("/{job_id}/artifacts", summary="The outputs a job recorded, with size and sha256")
def list_artifacts(job_id: JobId, session: SessionDep) -> list[Artifact]:
    artifacts = found(QUEUE.artifacts(session, job_id=job_id), job_id)
    return [Artifact.model_validate(a) for a in artifacts]


@router.get(
    "/{job_id}/files/{path:path}",
    summary="One file a job wrote, by its path inside the job's folder (e.g. export/model.onnx)",
    response_class=FileResponse,
    responses={
        404: {"description": "No such job or file"},
        422: {"description": "A path that leaves the folder"},
    },
)
def get_file(
    job_id: JobId, path: Annotated[str, Path(min_length=1, max_length=4096)], session: SessionDep
) -> FileResponse:
    job = found(QUEUE.get(session, job_id=job_id), job_id)
    if job.artifact_dir is None:
        raise not_found("file", path)
    try:
        file = confine(FilePath(job.artifact_dir) / path, [FilePath(job.artifact_dir)])
    except ValueError as exc:
        raise ApiError(422, f"path: {exc}", details=[{"field": "path", "message": str(exc)}]) from None
    try:
        regular = file.is_file()  # a FIFO or a device is no file to hand out
    except OSError:  # a name too long for the file system, and the like: nothing by that name
        regular = False
    if not regular:
        raise not_found("file", path)
    return FileResponse(file, filename=file.name)
