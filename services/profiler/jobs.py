"""Running builds and validations as jobs, each in a process of its own.

The API only records a job and starts `unast-profiler run-job <id>`; the measurement never shares a
process (an interpreter lock, an allocator, a GIL-holding request) with the server. The worker takes the
device's lock, so measurements on one device run one at a time and never disturb each other, beats a
heartbeat with its progress, and writes its result and the job's success in one transaction: a worker
that dies leaves no half LUT, and a job without heartbeats is reported failed.
"""

import os
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.profiler import store
from services.profiler.device import probe
from services.profiler.limits import MEMORY_SHARE
from services.profiler.models import utcnow
from services.profiler.profiling import build_lut, validate_lut
from shared.db import make_engine, make_sessionmaker, named_lock
from shared.errors import ApiError
from shared.schemas.lut import BuildRequest, Job, ValidationRequest
from shared.settings import Settings

STALE_HEARTBEATS = 10  # a job silent for this many heartbeat intervals has lost its worker


def stale_after_s(settings: Settings) -> float:
    return STALE_HEARTBEATS * settings.profiler_heartbeat_s


def submit(
    session: Session, settings: Settings, *, kind: str, request: dict, lut_id: int | None = None
) -> Job:
    """Record a job and start its worker process; a thread reaps the process when it exits."""
    job = store.create_job(session, kind=kind, request=request, lut_id=lut_id)
    session.commit()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "services.profiler.cli", "run-job", str(job.id)],
            env={**os.environ, **settings.to_env()},
            start_new_session=True,  # an interrupted server does not interrupt a measurement
        )
    except OSError as exc:
        store.update_job(session, job_id=job.id, state="failed", error=f"could not start the worker: {exc}")
        session.commit()
        raise ApiError(503, f"could not start the worker: {exc}") from exc
    threading.Thread(target=child.wait, daemon=True).start()
    return job


@dataclass
class _Status:
    progress: float = 0.0
    message: str = "starting"


class Heartbeat:
    """Records the job's progress and a heartbeat every interval, from a thread of its own."""

    def __init__(self, sessions, job_id: int, interval_s: float, echo: bool = False):
        self.sessions, self.job_id, self.interval_s, self.echo = sessions, job_id, interval_s, echo
        self.status = _Status()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def update(self, progress: float, message: str) -> None:
        self.status = _Status(progress, message)

    def _beat(self) -> None:
        while True:
            status = self.status
            try:
                with self.sessions.begin() as session:
                    store.heartbeat(
                        session, job_id=self.job_id, progress=status.progress, message=status.message
                    )
            except SQLAlchemyError as exc:  # a busy or lost database: try again next beat, keep measuring
                print(f"job {self.job_id}: heartbeat not recorded: {exc}", file=sys.stderr, flush=True)
            if self.echo:
                print(
                    f"job {self.job_id}: {status.progress:4.0%} {status.message}", file=sys.stderr, flush=True
                )
            if self.stopped.wait(self.interval_s):
                return

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stopped.set()
        self.thread.join()


def run_job(settings: Settings, job_id: int, echo: bool = False) -> None:
    """Run one recorded job to its end in this process; raises after recording a failure.
    echo: also print the progress to stderr at every heartbeat."""
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            found = store.get_job_request(session, job_id=job_id)
            if found is None:
                raise LookupError(f"job {job_id} not found")
            kind, request, lut_id = found
            store.update_job(session, job_id=job_id, pid=os.getpid(), message="waiting for the device")
        with Heartbeat(sessions, job_id, settings.profiler_heartbeat_s, echo) as beat:
            _run(settings, engine, sessions, job_id, kind, request, lut_id, beat)
    except BaseException as exc:
        with sessions.begin() as session:
            error = "".join(traceback.format_exception_only(exc)).strip()
            store.update_job(
                session, job_id=job_id, state="failed", error=error[-4000:], finished_at=utcnow()
            )
        raise
    finally:
        engine.dispose()


def _run(settings, engine, sessions, job_id, kind, request, lut_id, beat: Heartbeat) -> None:
    info = probe(settings)
    with sessions.begin() as session:
        device_id = store.upsert_device(session, info=info)
        store.update_job(session, job_id=job_id, device_id=device_id)
    with named_lock(engine, f"profiler_device_{info.key}"):
        with sessions.begin() as session:
            store.update_job(session, job_id=job_id, state="running", started_at=utcnow())
        if kind == "build":
            build = BuildRequest.model_validate(request)
            measurement = build_lut(build, settings, beat.update)
            with sessions.begin() as session:
                lut_id = store.save_lut(session, device_id=device_id, key=build, measurement=measurement)
                _succeed(session, job_id, lut_id=lut_id)
            return
        validation = ValidationRequest.model_validate(request)
        with sessions.begin() as session:
            lut = store.get_lut(session, lut_id=lut_id)
        if lut is None:
            raise LookupError(f"LUT {lut_id} no longer exists")
        if lut.device_id != device_id:
            raise ValueError(
                f"LUT {lut_id} was measured on device {lut.device_id}, this is device {device_id}"
            )
        measurement = validate_lut(
            lut, validation, settings, int(info.memory_bytes * MEMORY_SHARE), beat.update
        )
        with sessions.begin() as session:
            validation_id = store.save_validation(
                session, lut_id=lut.id, request=validation, measurement=measurement
            )
            _succeed(session, job_id, validation_id=validation_id)


def _succeed(session, job_id: int, **result_ids: int) -> None:
    store.update_job(
        session,
        job_id=job_id,
        state="succeeded",
        progress=1.0,
        message="done",
        finished_at=utcnow(),
        **result_ids,
    )
