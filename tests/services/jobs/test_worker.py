"""The worker end to end, on the small `linear` job kind: run, fail, cancel within a step, shut down
and resume; worker processes sharing one database, one of them SIGKILLed mid-job."""

import json
import os
import queue as queues
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from services.jobs.checkpoint import load_checkpoint
from services.trainer.models import QUEUE
from services.trainer.paths import job_dir
from services.trainer.worker import trainer_worker
from shared.settings import Settings
from tests.services.jobs.linear_job import LinearSpec, linear_kind, run_linear
from tests.services.trainer.conftest import fast

ROOT = Path(__file__).parents[3]
HANG_GUARD_S = 120  # only against a hang; nothing is timed


def submit(sessions, spec: LinearSpec) -> str:
    with sessions() as session:
        return QUEUE.submit(session, spec=spec)[0].id


def job(sessions, job_id: str):
    with sessions() as session:
        return QUEUE.get(session, job_id=job_id)


def log_lines(sessions, job_id: str) -> list[str]:
    with sessions() as session:
        return [line.message for line in QUEUE.log(session, job_id=job_id, tail=1000)]


def run_once(settings: Settings, runner=run_linear, stop: threading.Event | None = None) -> bool:
    return trainer_worker(fast(settings), {"linear": linear_kind(runner)}).run_next(stop or threading.Event())


def test_a_job_runs_to_its_result_with_checkpoints_and_an_artifact(settings, sessions, trainer):
    job_id = submit(sessions, LinearSpec(steps=25, checkpoint_every=10))
    assert run_once(settings)
    done = trainer.job(job_id)
    assert (done.state, done.step, done.steps, done.progress, done.attempt) == ("succeeded", 25, 25, 1.0, 1)
    assert done.artifact_dir == str(job_dir(settings, job_id)) and done.finished_at >= done.started_at
    result = trainer.raw_result(job_id).result  # a test kind: no typed result in the trainer's contract
    assert result["loss"] < 0.5  # it learned: the untrained map is off by ~0.9
    assert load_checkpoint(Path(done.artifact_dir) / "checkpoint").step == 20
    (artifact,) = trainer.artifacts(job_id)
    weights = load_file(artifact.path)
    assert torch.equal(weights["weight"].flatten(), torch.tensor(result["weight"]))
    assert json.loads(Path(artifact.path).with_suffix(".json").read_text()) == artifact.meta
    lines = [line.message for line in trainer.log(job_id).lines]
    assert lines[0].startswith("attempt 1 started") and lines[-1] == "succeeded"
    assert not run_once(settings)  # nothing left to claim


def test_a_failing_job_fails_with_its_error(settings, sessions):
    def broken(ctx):
        ctx.step(0, 3)
        raise ValueError("teacher weights do not match its config")

    job_id = submit(sessions, LinearSpec(steps=3))
    assert run_once(settings, broken)
    failed = job(sessions, job_id)
    assert failed.state == "failed" and failed.error == "ValueError: teacher weights do not match its config"
    assert any("Traceback" in line for line in log_lines(sessions, job_id))


class Gate:
    """Lets the job take one step per permit, and tells which step it is waiting at."""

    def __init__(self):
        self.reached: queues.Queue[int] = queues.Queue()
        self.permits = threading.Semaphore(0)

    def __call__(self, step: int) -> None:
        self.reached.put(step)
        assert self.permits.acquire(timeout=HANG_GUARD_S)

    def wait_at(self, step: int) -> None:
        while (at := self.reached.get(timeout=HANG_GUARD_S)) != step:
            assert at < step


def test_cancel_stops_a_running_job_within_one_step(settings, sessions, trainer):
    job_id = submit(sessions, LinearSpec(steps=100, checkpoint_every=2))
    gate = Gate()
    worker = threading.Thread(target=run_once, args=(settings, partial(run_linear, before_step=gate)))
    worker.start()
    for _ in range(3):
        gate.permits.release()
    gate.wait_at(3)  # steps 0-2 done; step 3 is under way
    requested = trainer.cancel(job_id)
    assert requested.state == "running" and requested.cancel_requested
    gate.permits.release()  # the step under way finishes ...
    worker.join(HANG_GUARD_S)
    assert gate.reached.empty()  # ... and no further step starts
    cancelled = trainer.job(job_id)
    assert (cancelled.state, cancelled.step, cancelled.error) == (
        "cancelled",
        4,
        "cancel requested; stopped at step 4",
    )
    assert trainer.log(job_id).lines[-1].message == "cancelled: cancel requested; stopped at step 4"


def test_cancel_stops_a_running_job_at_its_next_status(settings, sessions, trainer):
    """Work not counted in steps (a LUT build's timing rounds) stops too: status() sees the cancel its
    last heartbeat read, without a query of its own."""
    reported = threading.Event()

    def rounds(ctx):
        for i in range(HANG_GUARD_S * 100):
            ctx.status(f"round {i}", 0.5)
            reported.set()
            time.sleep(0.01)

    job_id = submit(sessions, LinearSpec(steps=1))
    worker = threading.Thread(target=run_once, args=(settings, rounds))
    worker.start()
    assert reported.wait(HANG_GUARD_S)
    assert trainer.cancel(job_id).cancel_requested
    worker.join(HANG_GUARD_S)
    cancelled = trainer.job(job_id)
    assert cancelled.state == "cancelled"
    assert cancelled.error.startswith("cancel requested; stopped while round")


def test_shutdown_gives_the_job_back_and_the_next_worker_resumes_it(settings, sessions):
    spec = LinearSpec(steps=30, checkpoint_every=5)
    job_id, reference_id = submit(sessions, spec), submit(sessions, spec)
    stop = threading.Event()

    def stop_at_step_12(step: int) -> None:
        if step == 12:
            stop.set()  # what SIGTERM does; the job stops at its next step

    assert run_once(settings, partial(run_linear, before_step=stop_at_step_12), stop)
    released = job(sessions, job_id)
    assert (released.state, released.step, released.attempt, released.worker) == ("queued", 13, 0, None)
    assert run_once(settings)  # the same job again (the oldest), resumed from its step-10 checkpoint
    assert run_once(settings)  # the reference, never interrupted
    resumed, reference = job(sessions, job_id), job(sessions, reference_id)
    assert "resuming from the checkpoint at step 10" in log_lines(sessions, job_id)
    assert resumed.state == reference.state == "succeeded"
    assert resumed.result == reference.result


def worker_process(settings: Settings) -> subprocess.Popen:
    """`unast-trainer worker` in its own process, knowing the linear kind (linear_job.py's main)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
    for name, value in settings.model_dump(mode="json").items():
        if name in ("database_url", "artifacts_root", "input_roots", "log_level") or name.startswith(
            "trainer_"
        ):
            env[f"UNAST_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    env["PYTHONPATH"] = str(ROOT)
    script = Path(__file__).with_name("linear_job.py")
    return subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env)


def wait_for(predicate, what: str):
    deadline = time.monotonic() + HANG_GUARD_S
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)
    return value


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(HANG_GUARD_S)


@pytest.mark.slow
def test_worker_processes_share_the_queue_and_a_sigkilled_job_resumes_elsewhere(settings, sessions):
    """Three `unast-trainer worker` processes on one database. The one running the long job is
    SIGKILLed mid-way: another re-queues it (its process is gone, or its heartbeat went stale),
    resumes it from its last checkpoint, and the result equals an uninterrupted run's. Every other
    job runs exactly once."""
    settings = fast(settings, trainer_stale_s=3.0)
    spec = LinearSpec(steps=100, checkpoint_every=10, step_delay_s=0.025)  # killed with 80 steps to go
    long_id = submit(sessions, spec)  # the oldest: the first claim takes it
    short_ids = [submit(sessions, LinearSpec(steps=20, seed=i, step_delay_s=0.01)) for i in range(1, 7)]
    pointer = job_dir(settings, long_id) / "checkpoint" / "checkpoint.json"

    def checkpointed_at_20() -> bool:
        return pointer.exists() and json.loads(pointer.read_text())["step"] >= 20

    def all_finished() -> bool:
        return all(job(sessions, i).state in ("succeeded", "failed") for i in [long_id, *short_ids])

    workers = [worker_process(settings) for _ in range(3)]
    try:
        wait_for(checkpointed_at_20, "the step-20 checkpoint")
        owner = job(sessions, long_id).worker
        killed = next(w for w in workers if owner.split(":")[1] == str(w.pid))
        killed.kill()  # SIGKILL: no clean-up of any kind
        killed.wait()
        lost = job(sessions, long_id)  # unfinished: as the kill left it, or already taken up again
        assert lost.state in ("running", "queued") and lost.step < 100
        wait_for(all_finished, "every job to finish")
    finally:
        stop_workers(workers)
    assert [w.returncode for w in workers if w is not killed] == [0, 0]  # SIGTERM is a clean stop

    resumed = job(sessions, long_id)
    assert (resumed.state, resumed.attempt) == ("succeeded", 2) and resumed.worker != owner
    lines = log_lines(sessions, long_id)
    assert {
        "worker lost (its process is gone): queued",
        "worker lost (its heartbeat went stale): queued",
    } & set(lines)
    resumed_at = [int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("resuming from")]
    assert resumed_at and resumed_at[0] >= 20
    reference_id = submit(sessions, spec.model_copy(update={"step_delay_s": 0.0}))
    assert run_once(settings)
    assert resumed.result == job(sessions, reference_id).result  # same seed, same numbers

    for job_id in short_ids:  # claimed once each, run once each
        short = job(sessions, job_id)
        assert (short.state, short.attempt) == ("succeeded", 1)
        assert sum(line.startswith("attempt") for line in log_lines(sessions, job_id)) == 1
        with sessions() as session:
            assert len(QUEUE.artifacts(session, job_id=job_id)) == 1


def test_cancel_reaches_a_queued_job_before_any_worker(settings, sessions):
    job_id = submit(sessions, LinearSpec(steps=5))
    with sessions() as session:
        QUEUE.cancel(session, job_id=job_id)
    assert not run_once(settings)
    assert job(sessions, job_id).state == "cancelled"


def test_stale_interval_must_allow_two_heartbeats(sqlite_settings):
    with pytest.raises(ValidationError, match="trainer_stale_s"):
        fast(sqlite_settings, trainer_heartbeat_s=1.0, trainer_stale_s=1.5)


# The main thread waits on the event and clears it again and again, as a worker's idle loop waits on
# its stop event; each time it finds the event set it says so.
SIGNALLED = """
import signal
from services.jobs.worker import stop_on_signals
stop = stop_on_signals((signal.SIGTERM,))
print("ready", flush=True)
while True:
    if stop.wait(0.00001):
        stop.clear()
        print("set", flush=True)
"""


@pytest.mark.slow
def test_a_signal_sets_the_stop_event_whatever_the_main_thread_is_doing_with_it():
    """A barrage of SIGTERMs lands anywhere in the main thread's stop.wait(), also where that thread
    holds the event's own lock: a handler calling stop.set() would wait for it forever (the worker that
    never exited; under a barrage it recurses until the process dies). stop_on_signals' event is set
    off the main thread: the process lives on and a signal after the barrage is still answered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | {"PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", SIGNALLED], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    lines: queues.Queue[str] = queues.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=HANG_GUARD_S) == "ready\n"
        barrage_ends = time.monotonic() + 6.0
        while time.monotonic() < barrage_ends:
            child.send_signal(signal.SIGTERM)
            time.sleep(0.0005)
        with pytest.raises(queues.Empty):  # the answers to the barrage, until they stop coming
            while True:
                lines.get(timeout=1.0)
        assert child.poll() is None, "the signalled process died"
        child.send_signal(signal.SIGTERM)
        assert lines.get(timeout=30) == "set\n", "a signal after the barrage went unanswered"
    finally:
        child.kill()
        child.wait()
