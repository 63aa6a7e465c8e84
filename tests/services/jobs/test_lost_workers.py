"""A job whose worker process is gone (killed without notice on this machine) is taken back at once,
not after the stale interval, by workers and readers alike: re-queued by the trainer, failed by the
profiler."""

import socket
import subprocess
import sys

from fastapi.testclient import TestClient

from services.jobs.queue import process_gone, stale_cutoff, worker_name
from services.profiler.main import create_app as profiler_app
from services.profiler.models import QUEUE as PROFILER_QUEUE
from services.trainer.models import QUEUE
from tests.services.jobs.linear_job import LinearSpec
from tests.services.profiler.conftest import OPERATORS


def finished_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid runs nothing now
    return child.pid


def test_which_workers_are_gone():
    host = socket.gethostname()
    assert not process_gone(worker_name())  # this process
    assert process_gone(f"{host}:{finished_pid()}:abc123")
    assert not process_gone(f"another-machine:{finished_pid()}:abc123")  # only its heartbeat tells
    assert not process_gone("w1")


def test_a_trainer_job_whose_worker_is_gone_is_queued_again_at_once(sessions):
    with sessions() as session:
        job_id = QUEUE.submit(session, spec=LinearSpec(steps=5))[0].id
        lost = f"{socket.gethostname()}:{finished_pid()}:abc123"
        assert QUEUE.claim(session, worker=lost, kinds=["linear"]).id == job_id
    with sessions() as session:  # its heartbeat is fresh: only the process tells
        changed = QUEUE.recover_stale(session, stale_before=stale_cutoff(3600), max_attempts=3)
        assert changed["queued"] == [job_id]
        job = QUEUE.get(session, job_id=job_id)
        assert (job.state, job.worker) == ("queued", None)
        lines = [line.message for line in QUEUE.log(session, job_id=job_id, tail=10)]
    assert "worker lost (its process is gone): queued" in lines


def test_a_profiler_job_whose_worker_is_gone_reads_as_failed_at_once(settings):
    from services.profiler.jobs import BuildSpec, submit

    with TestClient(profiler_app(settings)) as http:
        sessions = http.app.state.sessionmaker
        with sessions() as session:
            spec = BuildSpec(shape="tiny", length=16, operators=OPERATORS)
            job_id = submit(session, spec=spec).id
            worker = f"{socket.gethostname()}:{finished_pid()}:abc123"
            assert PROFILER_QUEUE.claim(session, worker=worker, kinds=["build"]).id == job_id
        job = http.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "failed" and "its process is gone" in job["error"]
