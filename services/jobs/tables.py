"""The columns every service's job tables share (SQLAlchemy 2.0 mixins).

Each stateful service owns its tables and their migrations; its models module declares
`class Job(JobColumns, Base)` with its own table name, and the log-line and artifact tables beside it
name that job table. A job row is the whole truth about a job: the API writes specs and cancel
requests, workers claim rows, heartbeat them and write the outcome. Times are stored as naive UTC
(SQLite keeps no zone) and read back as aware UTC.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import Mapped, declared_attr, mapped_column


class UTCDateTime(TypeDecorator):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, _dialect) -> datetime | None:
        return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None

    def process_result_value(self, value: datetime | None, _dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class JobColumns:
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_digest: Mapped[str] = mapped_column(String(64))  # tells a replayed submission from a new one
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    step: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempt_progress: Mapped[float] = mapped_column(Float, default=0.0)  # progress when this attempt began
    message: Mapped[str] = mapped_column(String(500), default="queued")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    artifact_dir: Mapped[str | None] = mapped_column(String(4096))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at this attempt's pace so far; None until there is a pace to go by."""
        if self.state != "running" or self.started_at is None or self.heartbeat_at is None:
            return None
        done = self.progress - self.attempt_progress
        if done < 0.01:
            return None
        return (self.heartbeat_at - self.started_at).total_seconds() * (1.0 - self.progress) / done


class _OfAJob:
    """A row that belongs to one job of the table named by the subclass's `job_table`."""

    job_table: str

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)

    @declared_attr
    def job_id(cls) -> Mapped[str]:
        return mapped_column(ForeignKey(f"{cls.job_table}.id", ondelete="CASCADE"), index=True)


class JobLogColumns(_OfAJob):
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message: Mapped[str] = mapped_column(Text)


class ArtifactColumns(_OfAJob):
    """A file a job wrote under its artifact directory (safetensors + JSON); the bytes stay on disk."""

    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(4096))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@dataclass(frozen=True)
class JobTables:
    """One service's job, log-line and artifact tables: what a JobQueue works on."""

    job: type[JobColumns]
    log: type[JobLogColumns]
    artifact: type[ArtifactColumns]
