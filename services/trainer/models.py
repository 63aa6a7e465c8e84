"""The trainer's tables: its jobs, their log lines and their artifacts (the job runtime's columns).

Changes go through a new migration (services/trainer/migrations).
"""

from sqlalchemy import Index, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase

from services.jobs.queue import JobQueue, Recovery
from services.jobs.tables import ArtifactColumns, JobColumns, JobLogColumns, JobTables
from shared.settings import Settings


class Base(DeclarativeBase):
    pass


class Job(JobColumns, Base):
    __tablename__ = "trainer_jobs"
    __table_args__ = (Index("ix_trainer_jobs_state_created", "state", "created_at"),)


class JobLogLine(JobLogColumns, Base):
    __tablename__ = "trainer_job_logs"
    job_table = "trainer_jobs"


class Artifact(ArtifactColumns, Base):
    __tablename__ = "trainer_artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name"),)
    job_table = "trainer_jobs"


TABLES = JobTables(job=Job, log=JobLogLine, artifact=Artifact)
QUEUE = JobQueue(TABLES)  # what the API and the workers do to these tables


def recovery(settings: Settings) -> Recovery:
    """A job whose worker was lost is queued again (the next worker resumes it from its last
    checkpoint) until trainer_max_attempts workers were lost on it; workers and readers alike."""
    return Recovery(stale_s=settings.trainer_stale_s, max_attempts=settings.trainer_max_attempts)
