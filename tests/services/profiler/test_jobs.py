"""Builds as processes: two racing builders leave one LUT; a killed one leaves none and is reported
failed; a worker process runs what the API queues, stops a cancelled build within a heartbeat, and
stops with SIGTERM, giving its job back."""

import json
import os
import signal
import subprocess
import sys
import time

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.profiler.jobs import BuildSpec
from services.profiler.main import MIGRATIONS, VERSION_TABLE, create_app
from services.profiler.models import QUEUE, LutEntryRow, LutRow
from services.profiler.models import Job as JobRow
from shared.clients.profiler import ProfilerClient
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.schemas.lut import BuildResult
from shared.settings import Settings

from .conftest import OPERATORS


def build_command(tmp_path, *extra: str) -> list[str]:
    operators = tmp_path / "operators.json"
    operators.write_text(json.dumps([op.model_dump() for op in OPERATORS]))
    return [
        sys.executable, "-m", "services.profiler.cli", "build", "--shape", "tiny", "--length", "16",
        "--operators", str(operators), "--min-runs", "8", "--warmup-runs", "1", *extra,
    ]  # fmt: skip


def environment(settings: Settings, **overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
    return {**env, **settings.to_env(), **overrides}


def sessions_for(settings: Settings):
    engine = make_engine(settings.database_url)
    upgrade(engine, MIGRATIONS, VERSION_TABLE)  # before the racers, as `unast db upgrade` would
    return engine, make_sessionmaker(engine)


def counts(sessions) -> tuple[int, int]:
    with sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(LutRow)),
            s.scalar(select(func.count()).select_from(LutEntryRow)),
        )


def job_row(sessions, job_id: str) -> JobRow:
    with sessions() as s:
        return QUEUE.get(s, job_id=job_id)


def test_two_builders_racing_on_one_device_leave_one_lut(settings, tmp_path):
    engine, sessions = sessions_for(settings)
    command = build_command(tmp_path, "--time-cap-s", "0.5")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    racers = [subprocess.Popen(command, env=environment(settings), **pipes) for _ in range(2)]
    outputs = [r.communicate(timeout=300) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    printed = [json.loads(out) for out, _ in outputs]
    assert printed[0]["id"] == printed[1]["id"]  # both wrote the same LUT, one after the other
    assert counts(sessions) == (1, 6)
    with sessions() as s:
        jobs, _ = QUEUE.page(s)
        assert [(j.state, BuildResult.model_validate(j.result).lut_id) for j in jobs] == [
            ("succeeded", printed[0]["id"])
        ] * 2
    engine.dispose()


def test_a_killed_build_leaves_no_lut_and_its_job_is_reported_failed(settings, tmp_path):
    engine, sessions = sessions_for(settings)
    env = environment(settings, UNAST_PROFILER_HEARTBEAT_S="0.2")
    # a tight interval that is never reached: the build runs until the 60 s cap, or until killed
    command = build_command(tmp_path, "--time-cap-s", "60", "--target-ci", "0.000001")
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with sessions() as s:
                job = s.scalar(select(JobRow))
                if job is not None and job.state == "running" and job.progress > 0:
                    break
            time.sleep(0.1)
        else:
            raise AssertionError("the build never started timing")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert counts(sessions) == (0, 0)
    with TestClient(create_app(settings)) as http:  # its process is gone on this machine: seen at once
        reported = ProfilerClient(http).job(job.id)
    assert reported.state == "failed" and "its process is gone" in reported.error
    engine.dispose()


def test_a_worker_runs_queued_builds_and_sigterm_gives_the_running_one_back(settings):
    engine, sessions = sessions_for(settings)
    env = environment(settings, UNAST_PROFILER_HEARTBEAT_S="0.2", UNAST_PROFILER_POLL_S="0.1")
    quick = BuildSpec(shape="tiny", length=16, operators=OPERATORS, time_cap_s=0.3, min_runs=8, warmup_runs=1)
    # a tight interval that is never reached: this build runs until its 60 s cap, or until stopped
    long = quick.model_copy(update={"time_cap_s": 60.0, "target_ci": 0.000001})
    with sessions() as s:
        first = QUEUE.submit(s, spec=quick)[0].id
        second = QUEUE.submit(s, spec=long)[0].id
    worker = subprocess.Popen([sys.executable, "-m", "services.profiler.cli", "worker"], env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            with sessions() as s:
                running = QUEUE.get(s, job_id=second)
            if running.state == "running" and running.progress > 0:
                break
            assert time.monotonic() < deadline, "the second build never started timing"
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0  # stops within a measuring round, not at the 60 s cap
    finally:
        if worker.poll() is None:
            worker.kill()
    with sessions() as s:
        done, released = (QUEUE.get(s, job_id=j) for j in (first, second))
    assert done.state == "succeeded" and BuildResult.model_validate(done.result).lut_id is not None
    assert released.state == "queued" and released.result is None  # back in the queue, for the next worker
    assert counts(sessions) == (1, 6)
    engine.dispose()


def test_a_cancelled_build_stops_within_a_heartbeat_and_the_worker_goes_on(settings):
    engine, sessions = sessions_for(settings)
    env = environment(settings, UNAST_PROFILER_HEARTBEAT_S="0.2", UNAST_PROFILER_POLL_S="0.1")
    # a tight interval that is never reached: this build runs until its 60 s cap, or until cancelled
    long = BuildSpec(
        shape="tiny", length=16, operators=OPERATORS, time_cap_s=60.0, target_ci=0.000001, min_runs=8
    )
    with sessions() as s:
        job_id = QUEUE.submit(s, spec=long)[0].id
    worker = subprocess.Popen([sys.executable, "-m", "services.profiler.cli", "worker"], env=env)
    try:
        deadline = time.monotonic() + 120
        while not ((job := job_row(sessions, job_id)).state == "running" and job.progress > 0):
            assert time.monotonic() < deadline, "the build never started timing"
            time.sleep(0.1)
        with sessions() as s:
            QUEUE.cancel(s, job_id=job_id)
        while (job := job_row(sessions, job_id)).state == "running":
            assert time.monotonic() < deadline, "the cancelled build ran on"
            time.sleep(0.1)
        assert job.state == "cancelled" and job.error.startswith("cancel requested; stopped while timing")
        assert worker.poll() is None  # the worker lives on, for the next job
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert counts(sessions) == (0, 0)
    engine.dispose()
