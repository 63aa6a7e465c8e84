"""The job worker (`unast-trainer worker`): claims queued jobs one at a time and runs them.

Any number of workers may share one database: a claim is one atomic UPDATE, so no job runs twice at
once. While a job runs, a heartbeat thread stamps its row (with its progress) every
UNAST_TRAINER_HEARTBEAT_S; a job whose heartbeat is older than UNAST_TRAINER_STALE_S lost its worker
(killed, machine gone) and is re-queued by any idle worker -- at start and then every poll -- and the
next worker resumes it from its last checkpoint. SIGTERM or SIGINT stops the worker at the running
job's next step and puts that job back in the queue.
"""

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Mapping

import torch
from sqlalchemy.orm import Session, sessionmaker

from services.trainer import queue
from services.trainer.context import JobContext, JobStopped
from services.trainer.main import MIGRATIONS, VERSION_TABLE
from services.trainer.models import Job
from services.trainer.paths import job_dir
from services.trainer.runners import RUNNERS, Runner
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.settings import Settings

log = logging.getLogger("unast.trainer.worker")


class Heartbeat(threading.Thread):
    """Stamps the job's row every interval with the progress the job reported; notices a lost job."""

    def __init__(self, ctx: JobContext, sessions: sessionmaker[Session], interval_s: float):
        super().__init__(name=f"heartbeat-{ctx.job_id}", daemon=True)
        self.ctx = ctx
        self.sessions = sessions
        self.interval_s = interval_s
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            try:
                with self.sessions() as session:
                    ours = queue.heartbeat(
                        session,
                        job_id=self.ctx.job_id,
                        worker=self.ctx.worker,
                        step=self.ctx.step_done,
                        steps=self.ctx.steps,
                    )
            except Exception:  # a database hiccup: beat again next time; only a long silence is stale
                log.exception("heartbeat of job %s failed", self.ctx.job_id)
                continue
            if not ours:
                self.ctx.lost.set()
                return

    def stop(self) -> None:
        self.done.set()
        self.join()


class Worker:
    def __init__(self, settings: Settings, *, runners: Mapping[str, Runner] = RUNNERS):
        self.settings = settings
        self.runners = runners
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.engine = make_engine(settings.database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.next_recovery = 0.0  # time.monotonic() when to look for stale jobs again

    def serve(self, stop: threading.Event) -> None:
        """Run jobs until `stop` is set (then the running job goes back to the queue)."""
        torch.set_num_threads(self.settings.torch_threads)
        upgrade(self.engine, MIGRATIONS, VERSION_TABLE)
        log.info("worker %s runs kinds %s", self.name, sorted(self.runners) or "(none)")
        while not stop.is_set():
            if not self.run_next(stop):
                stop.wait(self.settings.trainer_poll_s)
        self.engine.dispose()

    def recover(self) -> dict[str, list[str]]:
        with self.sessions() as session:
            changed = queue.recover_stale(
                session,
                stale_before=queue.stale_cutoff(self.settings.trainer_stale_s),
                max_attempts=self.settings.trainer_max_attempts,
            )
        for state, ids in changed.items():
            if ids:
                log.warning("jobs whose worker was lost, now %s: %s", state, ", ".join(ids))
        return changed

    def run_next(self, stop: threading.Event) -> bool:
        """Recover stale jobs (when due), then claim and run one job; False when none was queued."""
        if time.monotonic() >= self.next_recovery:
            self.recover()
            # every half stale interval: a lost job waits at most 1.5 x UNAST_TRAINER_STALE_S
            self.next_recovery = time.monotonic() + self.settings.trainer_stale_s / 2
        with self.sessions() as session:
            job = queue.claim_job(session, worker=self.name, kinds=list(self.runners))
        if job is None:
            return False
        self.run(job, stop)
        return True

    def run(self, job: Job, stop: threading.Event) -> None:
        ctx = JobContext(
            job_id=job.id,
            spec=job.spec,
            attempt=job.attempt,
            directory=job_dir(self.settings, job.id),
            settings=self.settings,
            sessions=self.sessions,
            worker=self.name,
            stopping=stop,
        )
        ctx.directory.mkdir(parents=True, exist_ok=True)
        with self.sessions() as session:
            queue.set_artifact_dir(session, job_id=job.id, worker=self.name, path=str(ctx.directory))
        ctx.log(f"attempt {job.attempt} started on worker {self.name}")
        log.info("job %s (%s) attempt %d started", job.id, job.kind, job.attempt)
        beat = Heartbeat(ctx, self.sessions, self.settings.trainer_heartbeat_s)
        beat.start()
        outcome, result, error = "succeeded", None, None
        try:
            result = self.runners[job.kind](ctx)
        except JobStopped as stopped:
            outcome, error = stopped.outcome, str(stopped)
        except Exception as exc:
            outcome, error = "failed", f"{type(exc).__name__}: {exc}"
            ctx.log(traceback.format_exc(limit=8))
        finally:
            beat.stop()
        self._record(ctx, outcome, result, error)

    def _record(self, ctx: JobContext, outcome: str, result: dict | None, error: str | None) -> None:
        log.info("job %s: %s%s", ctx.job_id, outcome, f" ({error})" if error else "")
        if outcome == "lost":  # another worker owns the job now: write nothing to it
            return
        with self.sessions() as session:
            if outcome == "released":
                queue.release_job(session, job_id=ctx.job_id, worker=self.name, step=ctx.step_done)
            else:
                step = ctx.steps if outcome == "succeeded" and ctx.steps is not None else ctx.step_done
                queue.finish_job(
                    session,
                    job_id=ctx.job_id,
                    worker=self.name,
                    state=outcome,
                    step=step,
                    steps=ctx.steps,
                    result=result,
                    error=None if outcome == "succeeded" else error,
                )
        ctx.log(f"{outcome}" + (f": {error}" if error and outcome != "succeeded" else ""))
