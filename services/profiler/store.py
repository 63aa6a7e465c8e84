"""Reading and writing the profiler's tables. Keyword-only data functions; None when absent.

Writers never commit: the caller decides the transaction, so a LUT and its job's success land together
or not at all. Job rows are the job runtime's (services/jobs/queue.py), read through its routes.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.jobs.tables import utcnow
from services.profiler.device import DeviceInfo
from services.profiler.models import DeviceRow, LutEntryRow, LutRow, ValidationRow
from services.profiler.profiling import LutMeasurement, ValidationMeasurement, error_summary
from shared.schemas.lut import (
    Device,
    Lut,
    LutEntry,
    LutKey,
    LutSummary,
    Measured,
    Validation,
    ValidationRequest,
)
from shared.schemas.operators import operator_adapter

LUT_KEY_COLUMNS = ("device_id", "shape_hash", "regime", "batch", "length", "dtype")


def _insert(session: Session):
    """INSERT with ON CONFLICT for the dialect in use."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands datetimes back without their zone; every stored one is UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


# -- devices ---------------------------------------------------------------------------------------


def upsert_device(session: Session, *, info: DeviceInfo) -> int:
    insert = _insert(session)
    stmt = insert(DeviceRow).values(
        key=info.key,
        name=info.name,
        kind=info.kind,
        memory_bytes=info.memory_bytes,
        fingerprint=info.fingerprint,
    )
    stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"name": stmt.excluded.name})
    return session.execute(stmt.returning(DeviceRow.id)).scalar_one()


def _device(row: DeviceRow) -> Device:
    return Device(
        id=row.id,
        key=row.key,
        name=row.name,
        kind=row.kind,
        memory_bytes=row.memory_bytes,
        fingerprint=row.fingerprint,
        created_at=_aware(row.created_at),
    )


def list_devices(session: Session) -> list[Device]:
    return [_device(row) for row in session.scalars(select(DeviceRow).order_by(DeviceRow.id))]


def get_device(session: Session, *, device_id: int) -> Device | None:
    row = session.get(DeviceRow, device_id)
    return _device(row) if row else None


def get_device_by_key(session: Session, *, key: str) -> Device | None:
    row = session.scalar(select(DeviceRow).where(DeviceRow.key == key))
    return _device(row) if row else None


# -- LUTs ------------------------------------------------------------------------------------------


def save_lut(session: Session, *, device_id: int, key: LutKey, measurement: LutMeasurement) -> int:
    """Insert or replace the LUT of (device, key) with its entries; the caller commits."""
    insert = _insert(session)
    values = {
        "device_id": device_id,
        **key.key_fields(),
        "shape_name": key.shape.name,
        "shape": key.shape.model_dump(mode="json"),
        "operator_count": len(measurement.entries),
        "fixed": measurement.fixed.model_dump(mode="json"),
        "activation_method": measurement.activation_method,
        "clock": measurement.clock,
        "build_seconds": measurement.build_seconds,
        "drift": measurement.drift,
        "stable": measurement.stable,
        "measured_at": utcnow(),
    }
    stmt = insert(LutRow).values(**values)
    replaced = {k: stmt.excluded[k] for k in values if k not in LUT_KEY_COLUMNS}
    stmt = stmt.on_conflict_do_update(index_elements=list(LUT_KEY_COLUMNS), set_=replaced)
    lut_id = session.execute(stmt.returning(LutRow.id)).scalar_one()
    session.execute(delete(LutEntryRow).where(LutEntryRow.lut_id == lut_id))
    session.add_all(
        LutEntryRow(
            lut_id=lut_id,
            spec_hash=e.hash,
            name=e.name,
            kind=e.operator.kind,
            operator=e.operator.model_dump(mode="json"),
            **e.latency.model_dump(),
            **e.costs.model_dump(exclude={"latency_ms"}),
        )
        for e in measurement.entries
    )
    session.flush()
    return lut_id


def _summary_fields(row: LutRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "device_id": row.device_id,
        "shape": row.shape,
        "shape_hash": row.shape_hash,
        "regime": row.regime,
        "batch": row.batch,
        "length": row.length,
        "dtype": row.dtype,
        "operator_count": row.operator_count,
        "activation_method": row.activation_method,
        "clock": row.clock,
        "build_seconds": row.build_seconds,
        "drift": row.drift,
        "stable": row.stable,
        "measured_at": _aware(row.measured_at),
    }


def _entry(row: LutEntryRow) -> LutEntry:
    latency = {k: getattr(row, k) for k in ("median_ms", "p10_ms", "p90_ms", "runs", "cv")}
    costs = {k: getattr(row, k) for k in ("params", "weight_bytes", "kv_bytes_per_token", "activation_bytes")}
    return LutEntry(
        operator=operator_adapter.validate_python(row.operator),
        name=row.name,
        hash=row.spec_hash,
        latency=latency,
        costs={"latency_ms": row.p10_ms, **costs},
    )


def get_lut(session: Session, *, lut_id: int) -> Lut | None:
    row = session.get(LutRow, lut_id)
    if row is None:
        return None
    return Lut(
        **_summary_fields(row),
        fixed=Measured.model_validate(row.fixed),
        entries=[_entry(e) for e in row.entries],
    )


def find_lut(session: Session, *, device_id: int, key: LutKey) -> Lut | None:
    lut_id = session.scalar(
        select(LutRow.id).filter_by(device_id=device_id, **key.key_fields()),
    )
    return get_lut(session, lut_id=lut_id) if lut_id is not None else None


def list_luts(
    session: Session,
    *,
    device_id: int | None = None,
    shape: str | None = None,
    regime: str | None = None,
    batch: int | None = None,
    length: int | None = None,
    dtype: str | None = None,
) -> list[LutSummary]:
    """LUTs matching every given filter; shape matches a preset/model name or a shape hash."""
    query: Select = select(LutRow).order_by(LutRow.id)
    if shape is not None:
        query = query.where((LutRow.shape_name == shape) | (LutRow.shape_hash == shape))
    filters = {"device_id": device_id, "regime": regime, "batch": batch, "length": length, "dtype": dtype}
    query = query.filter_by(**{k: v for k, v in filters.items() if v is not None})
    return [LutSummary(**_summary_fields(row)) for row in session.scalars(query)]


def count_luts(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(LutRow))


# -- validations -----------------------------------------------------------------------------------


def save_validation(
    session: Session,
    *,
    lut_id: int,
    request: ValidationRequest,
    measurement: ValidationMeasurement,
) -> int:
    median, worst = error_summary(measurement.results)
    row = ValidationRow(
        lut_id=lut_id,
        count=len(measurement.results),
        seed=request.seed,
        median_abs_error=median,
        max_abs_error=worst,
        drift=measurement.drift,
        architectures=[r.model_dump(mode="json") for r in measurement.results],
    )
    session.add(row)
    session.flush()
    return row.id


def _validation(row: ValidationRow) -> Validation:
    return Validation(
        id=row.id,
        lut_id=row.lut_id,
        count=row.count,
        seed=row.seed,
        median_abs_error=row.median_abs_error,
        max_abs_error=row.max_abs_error,
        drift=row.drift,
        created_at=_aware(row.created_at),
        architectures=row.architectures,
    )


def get_validation(session: Session, *, validation_id: int) -> Validation | None:
    row = session.get(ValidationRow, validation_id)
    return _validation(row) if row else None


def list_validations(session: Session, *, lut_id: int) -> list[Validation]:
    rows = session.scalars(
        select(ValidationRow).where(ValidationRow.lut_id == lut_id).order_by(ValidationRow.id)
    )
    return [_validation(row) for row in rows]
