"""The profiler's tables (SQLAlchemy 2.0 typed models). Changes go through a new migration.

A device is one fingerprint (hardware, threads, driver, torch). A LUT is unique per (device, shape,
regime, batch, length, dtype), so rebuilding one replaces it in place. Builds and validations are jobs
of the job runtime (services/jobs), in the profiler's own job tables.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from services.jobs.queue import JobQueue, Recovery
from services.jobs.tables import ArtifactColumns, JobColumns, JobLogColumns, JobTables, utcnow
from shared.settings import Settings


class Base(DeclarativeBase):
    pass


class DeviceRow(Base):
    __tablename__ = "profiler_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(8))
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    fingerprint: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LutRow(Base):
    __tablename__ = "profiler_luts"
    __table_args__ = (
        UniqueConstraint(
            "device_id", "shape_hash", "regime", "batch", "length", "dtype", name="uq_profiler_lut_key"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("profiler_devices.id", ondelete="CASCADE"), index=True)
    shape_hash: Mapped[str] = mapped_column(String(16))
    shape_name: Mapped[str | None] = mapped_column(String(100))
    shape: Mapped[dict[str, Any]] = mapped_column(JSON)
    regime: Mapped[str] = mapped_column(String(8))
    batch: Mapped[int] = mapped_column(Integer)
    length: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(10))
    operator_count: Mapped[int] = mapped_column(Integer)
    fixed: Mapped[dict[str, Any]] = mapped_column(JSON)  # a Measured: latency stats and costs
    activation_method: Mapped[str] = mapped_column(String(10))
    clock: Mapped[str] = mapped_column(String(16))
    build_seconds: Mapped[float] = mapped_column(Float)
    drift: Mapped[float | None] = mapped_column(Float)
    stable: Mapped[bool | None] = mapped_column()
    measured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    entries: Mapped[list["LutEntryRow"]] = relationship(
        order_by="LutEntryRow.id", cascade="all, delete-orphan", passive_deletes=True
    )


class LutEntryRow(Base):
    __tablename__ = "profiler_lut_entries"
    __table_args__ = (UniqueConstraint("lut_id", "spec_hash", name="uq_profiler_lut_entry"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lut_id: Mapped[int] = mapped_column(ForeignKey("profiler_luts.id", ondelete="CASCADE"), index=True)
    spec_hash: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    operator: Mapped[dict[str, Any]] = mapped_column(JSON)
    median_ms: Mapped[float] = mapped_column(Float)
    p10_ms: Mapped[float] = mapped_column(Float)
    p90_ms: Mapped[float] = mapped_column(Float)
    runs: Mapped[int] = mapped_column(Integer)
    cv: Mapped[float] = mapped_column(Float)
    params: Mapped[int] = mapped_column(BigInteger)
    weight_bytes: Mapped[int] = mapped_column(BigInteger)
    kv_bytes_per_token: Mapped[int] = mapped_column(BigInteger)
    activation_bytes: Mapped[int] = mapped_column(BigInteger)


class ValidationRow(Base):
    __tablename__ = "profiler_validations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lut_id: Mapped[int] = mapped_column(ForeignKey("profiler_luts.id", ondelete="CASCADE"), index=True)
    count: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    median_abs_error: Mapped[float] = mapped_column(Float)
    max_abs_error: Mapped[float] = mapped_column(Float)
    drift: Mapped[float] = mapped_column(Float)
    architectures: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # ValidatedArchitecture dicts
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(JobColumns, Base):
    """A LUT build or a validation: the job runtime's columns (services/jobs/tables.py)."""

    __tablename__ = "profiler_jobs"
    __table_args__ = (Index("ix_profiler_jobs_state_created", "state", "created_at"),)


class JobLogLine(JobLogColumns, Base):
    __tablename__ = "profiler_job_logs"
    job_table = "profiler_jobs"


class Artifact(ArtifactColumns, Base):
    __tablename__ = "profiler_artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_profiler_artifact"),)
    job_table = "profiler_jobs"


QUEUE = JobQueue(JobTables(job=Job, log=JobLogLine, artifact=Artifact))


def recovery(settings: Settings) -> Recovery:
    """A measurement is not resumed (a second attempt would mix two runs' timings): a job whose worker
    was lost is failed at once, for its workers and its readers alike; rebuild it."""
    return Recovery(stale_s=settings.profiler_stale_s, max_attempts=1)
