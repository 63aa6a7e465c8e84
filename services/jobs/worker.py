"""The job worker: claims queued jobs one at a time and runs them, with a heartbeat.

Any number of workers may share one database: a claim is one atomic UPDATE, so no job runs twice at
once. While a job runs, a heartbeat thread stamps its row (with its progress) every `heartbeat_s`; a
job whose heartbeat is older than the service's `recovery.stale_s` lost its worker (killed, machine
gone) and is re-queued by any idle worker -- at start and then every half stale interval -- or by any
reader of the service's API (the same rule), and the next worker resumes it from its last checkpoint
(or fails it, after `recovery.max_attempts` lost workers). Setting `stop` (SIGTERM, SIGINT)
stops the worker at the running job's next step and puts that job back in the queue. A job of a
distributed kind may run as several processes (`WorkerConfig.processes`; processes.py): the worker
keeps the claim and the heartbeat while the ranks compute. A database that
goes away does not kill an idle worker: it logs and tries again with back-off; at start-up a worker
waits for the database up to UNAST_DATABASE_STARTUP_WAIT_S (one log line per attempt), then gives up
with shared.db.DatabaseUnavailable.
"""

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.jobs.context import JobStopped, QueuedContext
from services.jobs.kind import JobKind
from services.jobs.processes import RankFailed, run_processes
from services.jobs.queue import JobQueue, Recovery, worker_name
from services.jobs.tables import JobColumns
from shared.db import DatabaseUnavailable, engine_from_settings, make_sessionmaker, wait_for_database
from shared.settings import Settings

log = logging.getLogger("unast.jobs.worker")

MAX_BACKOFF_S = 60.0


@dataclass(frozen=True)
class WorkerConfig:
    heartbeat_s: float
    recovery: Recovery  # when a job's worker is lost, and what then becomes of the job
    poll_s: float
    directory: Callable[[str], Path]  # job id -> its folder
    processes: int = 1  # a distributed kind's job runs as this many processes (processes.py)...
    rank_module: str | None = None  # ... each `python -m rank_module <job dir>`


class Heartbeat(threading.Thread):
    """Stamps the job's row every interval with the progress the job reported; notices a lost job and
    a cancel (for ctx.status, which reads no database)."""

    def __init__(
        self, ctx: QueuedContext, queue: JobQueue, sessions: sessionmaker[Session], interval_s: float
    ):
        super().__init__(name=f"heartbeat-{ctx.job_id}", daemon=True)
        self.ctx, self.queue, self.sessions, self.interval_s = ctx, queue, sessions, interval_s
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            try:
                with self.sessions() as session:
                    ours = self.queue.heartbeat(
                        session,
                        job_id=self.ctx.job_id,
                        worker=self.ctx.worker,
                        step=self.ctx.step_done,
                        steps=self.ctx.steps,
                        progress=self.ctx.progress,
                        message=self.ctx.message,
                    )
                    if ours and self.queue.cancel_requested(session, job_id=self.ctx.job_id):
                        self.ctx.cancelled.set()
            except SQLAlchemyError:  # a database hiccup: beat again next time; only a long silence is stale
                log.exception("heartbeat of job %s failed", self.ctx.job_id)
                continue
            if not ours:
                self.ctx.lost.set()
                return

    def stop(self) -> None:
        self.done.set()
        self.join()


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        kinds: Mapping[str, JobKind],
        queue: JobQueue,
        config: WorkerConfig,
        migrate: Callable[[Engine], None] = lambda _engine: None,
    ):
        self.settings = settings
        self.kinds = kinds
        self.queue = queue
        self.config = config
        self.migrate = migrate
        self.name = worker_name()
        self.engine = engine_from_settings(settings)
        self.sessions = make_sessionmaker(self.engine)
        self.next_recovery = 0.0  # time.monotonic() when to look for stale jobs again

    def serve(self, stop: threading.Event) -> None:
        """Run jobs until `stop` is set (then the running job goes back to the queue). Raises
        DatabaseUnavailable when the database does not answer within the start-up wait."""
        wait_for_database(self.engine, self.settings.database_startup_wait_s, stop)
        if stop.is_set():
            return
        self.migrate(self.engine)
        log.info("worker %s runs kinds %s", self.name, sorted(self.kinds) or "(none)")
        failures = 0
        while not stop.is_set():
            try:
                ran = self.run_next(stop)
                failures = 0
            except SQLAlchemyError as exc:
                failures += 1
                wait = min(MAX_BACKOFF_S, self.config.poll_s * 2**failures)
                log.warning("the database failed (%s); trying again in %.1f s", type(exc).__name__, wait)
                stop.wait(wait)
                continue
            if not ran:
                stop.wait(self.config.poll_s)
        self.engine.dispose()

    def recover(self) -> dict[str, list[str]]:
        with self.sessions() as session:
            changed = self.queue.recover(session, self.config.recovery)
        for state, ids in changed.items():
            if ids:
                log.warning("jobs whose worker was lost, now %s: %s", state, ", ".join(ids))
        return changed

    def run_next(self, stop: threading.Event) -> bool:
        """Recover lost jobs (when due, or at once when a worker of this machine is gone), then claim
        and run one job; False when none was queued."""
        with self.sessions() as session:
            due = time.monotonic() >= self.next_recovery or self.queue.gone_workers(session)
        if due:
            self.recover()
            # every half stale interval: a lost job waits at most 1.5 x the stale interval
            self.next_recovery = time.monotonic() + self.config.recovery.stale_s / 2
        with self.sessions() as session:
            job = self.queue.claim(session, worker=self.name, kinds=list(self.kinds))
        if job is None:
            return False
        self.run(job, stop)
        return True

    def run_one(self, job_id: str, stop: threading.Event) -> JobColumns:
        """Claim one queued job by id and run it here (a command-line run of a recorded job)."""
        with self.sessions() as session:
            job = self.queue.claim(session, worker=self.name, kinds=list(self.kinds), job_id=job_id)
        if job is None:
            raise LookupError(f"job {job_id} is not queued")
        self.run(job, stop)
        with self.sessions() as session:
            return self.queue.get(session, job_id=job_id)

    def run(self, job: JobColumns, stop: threading.Event) -> None:
        kind = self.kinds[job.kind]
        ctx = QueuedContext(
            job_id=job.id,
            spec=job.spec,
            attempt=job.attempt,
            directory=self.config.directory(job.id),
            settings=self.settings,
            queue=self.queue,
            engine=self.engine,
            sessions=self.sessions,
            worker=self.name,
            stopping=stop,
        )
        ctx.directory.mkdir(parents=True, exist_ok=True)
        with self.sessions() as session:
            self.queue.set_artifact_dir(session, job_id=job.id, worker=self.name, path=str(ctx.directory))
        ctx.log(f"attempt {job.attempt} started on worker {self.name}")
        log.info("job %s (%s) attempt %d started", job.id, job.kind, job.attempt)
        beat = Heartbeat(ctx, self.queue, self.sessions, self.config.heartbeat_s)
        beat.start()
        outcome, value, error = "succeeded", None, None
        try:
            if kind.distributed and self.config.processes > 1 and self.config.rank_module:
                value = run_processes(ctx, kind, self.config.processes, self.config.rank_module)
            else:
                value = kind.run(ctx)
            if kind.save is None:
                value = kind.stored_result(value)
        except JobStopped as stopped:
            outcome, error = stopped.outcome, str(stopped)
        except RankFailed as exc:
            outcome, error = "failed", str(exc)
        except Exception as exc:
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"
            ctx.log(traceback.format_exc(limit=8))
        finally:
            beat.stop()
        self._record(ctx, kind, outcome, value, error)

    def _record(self, ctx: QueuedContext, kind: JobKind, outcome: str, value, error: str | None) -> None:
        log.info("job %s: %s%s", ctx.job_id, outcome, f" ({error})" if error else "")
        if outcome == "lost":  # another worker owns the job now: write nothing to it
            return
        with self.sessions() as session:
            if outcome == "crashed":  # one of its processes died
                max_attempts = self.config.recovery.max_attempts
                state = self.queue.requeue(
                    session,
                    job_id=ctx.job_id,
                    worker=self.name,
                    step=ctx.step_done,
                    error=error,
                    max_attempts=max_attempts,
                )
                ctx.log(f"{error}: {state}")
                return
            if outcome == "released":
                self.queue.release(session, job_id=ctx.job_id, worker=self.name, step=ctx.step_done)
                state = self.queue.get(session, job_id=ctx.job_id).state
                stopped = "cancelled: asked to, as its worker stopped"
                ctx.log(f"released: {error}" if state == "queued" else stopped)
                return
            step = ctx.steps if outcome == "succeeded" and ctx.steps is not None else ctx.step_done
            finish = {"job_id": ctx.job_id, "worker": self.name, "step": step, "steps": ctx.steps}
            if outcome == "succeeded" and kind.save is not None:
                try:
                    self.queue.finish(
                        session,
                        state="succeeded",
                        save=lambda s: kind.stored_result(kind.save(s, value)),
                        **finish,
                    )
                except Exception as exc:  # the outputs could not be stored: nothing of them was
                    session.rollback()
                    outcome, error = "failed", f"{type(exc).__name__}: {exc}"
                    ctx.log(traceback.format_exc(limit=8))
                    self.queue.finish(session, state="failed", error=error, **finish)
            else:
                result = value if outcome == "succeeded" else None
                self.queue.finish(session, state=outcome, result=result, error=error, **finish)
        ctx.log(f"{outcome}" + (f": {error}" if error and outcome != "succeeded" else ""))


def serve_process(command: str, worker: Worker) -> None:
    """The body of a `worker` command: logs to stderr, stops on SIGTERM or SIGINT (the running job goes
    back to the queue), and exits with one line when the database never answers at start-up."""
    logging.basicConfig(level=worker.settings.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    stop = stop_on_signals((signal.SIGTERM, signal.SIGINT))
    try:
        worker.serve(stop)
    except DatabaseUnavailable as exc:
        sys.exit(f"{command}: {exc}; giving up")


def stop_on_signals(signums: tuple[signal.Signals, ...]) -> threading.Event:
    """An event set whenever one of the signals arrives (call from the main thread, once per process).

    Not set by the signal handler: a Python handler runs in the main thread between two bytecodes,
    also while that thread is inside `stop.wait()` holding the event's own lock, and `stop.set()`
    would then wait for that lock forever (a SIGTERMed idle worker that never exits). The handlers do
    nothing; the interpreter writes each signal's number to a pipe, and a thread reading it sets the
    event. The pipe is the process's one wakeup fd: nothing else in a worker may set one (an asyncio
    loop in the main thread would)."""
    stop = threading.Event()
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in signums:
        signal.signal(signum, lambda *_: None)

    def watch() -> None:
        while True:
            if any(byte in signums for byte in os.read(read_end, 64)):
                stop.set()

    threading.Thread(target=watch, name="stop-on-signal", daemon=True).start()
    return stop
