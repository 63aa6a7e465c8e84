"""The profiler's job kinds on the job runtime (services/jobs): LUT builds and validations.

The API only records a job; a profiler worker (`unast-profiler worker`, a process of its own, so the
measurement never shares an interpreter with the server) claims it. A worker measures its own
device and takes that device's lock, so measurements on one device run one at a time and never
disturb each other. A build's LUT, or a validation's record, is written in the transaction that marks
the job succeeded: a worker that dies leaves no half LUT. A measurement is not resumed: a job whose
worker was lost is failed (rebuild it; models.recovery), and readers see that at once. A cancelled
build stops at its next progress report (ctx.status), within a heartbeat.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy.orm import Session

from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.profiler import store
from services.profiler.device import DeviceInfo, probe
from services.profiler.models import QUEUE
from services.profiler.profiling import LutMeasurement, ValidationMeasurement, build_lut, validate_lut
from shared.costs import MEMORY_SHARE
from shared.db import make_engine, make_sessionmaker
from shared.schemas.lut import Build, BuildResult, ValidationRequest, ValidationResult
from shared.settings import Settings


class BuildSpec(Build):
    kind: Literal["build"] = "build"


class ValidationSpec(ValidationRequest):
    kind: Literal["validate"] = "validate"
    lut_id: int


@contextmanager
def _store(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


@contextmanager
def _device(ctx: JobContext) -> Iterator[DeviceInfo]:
    """This worker's device, held for the job: measurements on one device run one at a time."""
    info = probe(ctx.settings)
    ctx.status("waiting for the device", 0.0)
    with ctx.exclusive(f"profiler_device_{info.key}"):
        yield info


def run_build(ctx: JobContext) -> tuple[DeviceInfo, Build, LutMeasurement]:
    request = BuildSpec.model_validate(ctx.spec)
    with _device(ctx) as info:
        measurement = build_lut(request, ctx.settings, lambda f, message: ctx.status(message, f))
    return info, request, measurement


def save_build(session: Session, value: tuple[DeviceInfo, Build, LutMeasurement]) -> BuildResult:
    info, request, measurement = value
    device_id = store.upsert_device(session, info=info)
    lut_id = store.save_lut(session, device_id=device_id, key=request, measurement=measurement)
    return BuildResult(lut_id=lut_id, device_id=device_id)


def run_validation(ctx: JobContext) -> tuple[DeviceInfo, ValidationSpec, ValidationMeasurement]:
    spec = ValidationSpec.model_validate(ctx.spec)
    with _device(ctx) as info:
        with _store(ctx.settings) as session:
            lut = store.get_lut(session, lut_id=spec.lut_id)
            owner = store.get_device(session, device_id=lut.device_id) if lut is not None else None
        if lut is None:
            raise LookupError(f"LUT {spec.lut_id} no longer exists")
        if owner.key != info.key:
            raise ValueError(
                f"LUT {spec.lut_id} was measured on {owner.name}; this worker measures {info.name}"
            )
        memory = int(info.memory_bytes * MEMORY_SHARE)
        measurement = validate_lut(lut, spec, ctx.settings, memory, lambda f, message: ctx.status(message, f))
    return info, spec, measurement


def save_validation(
    session: Session, value: tuple[DeviceInfo, ValidationSpec, ValidationMeasurement]
) -> ValidationResult:
    info, spec, measurement = value
    device_id = store.upsert_device(session, info=info)
    validation_id = store.save_validation(session, lut_id=spec.lut_id, request=spec, measurement=measurement)
    return ValidationResult(validation_id=validation_id, lut_id=spec.lut_id, device_id=device_id)


KINDS: dict[str, JobKind] = {
    "build": JobKind(name="build", spec=BuildSpec, result=BuildResult, run=run_build, save=save_build),
    "validate": JobKind(
        name="validate",
        spec=ValidationSpec,
        result=ValidationResult,
        run=run_validation,
        save=save_validation,
    ),
}


def submit(session: Session, *, spec: BuildSpec | ValidationSpec) -> Any:
    """Queue a build or a validation (the caller has checked it); returns the job row."""
    job, _ = QUEUE.submit(session, spec=spec)
    return job
