"""Dependencies the trainer's routes share: the job queue on the trainer's tables, a job or a 404."""

from typing import Annotated, TypeVar

from fastapi import Path

from services.trainer.models import QUEUE
from shared.errors import not_found

T = TypeVar("T")

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job's id.")]


def found(value: T | None, job_id: str) -> T:
    """What a queue function returned for a job, or a 404 when the job does not exist."""
    if value is None:
        raise not_found("job", job_id)
    return value


__all__ = ["QUEUE", "JobId", "found"]
