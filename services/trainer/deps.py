"""Dependencies the trainer's routes share: the job queue on the trainer's tables, a job or a 404."""

from services.jobs.routes import JobId, found
from services.trainer.models import QUEUE

__all__ = ["QUEUE", "JobId", "found"]
