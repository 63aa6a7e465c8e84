"""The pipeline waits for trainer and profiler jobs with the clients' one wait loop: the stage's bar
follows the job, a finished job ends the wait, and SIGINT/SIGTERM cancels the job (profiler builds
included) and stops the run, resumable."""

import io
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from services.pipeline.progress import Reporter
from services.pipeline.stages import PipelineError, Stopped, wait_profiler, wait_trainer
from services.profiler.jobs import BuildSpec
from services.profiler.main import create_app as profiler_app
from services.profiler.models import QUEUE as PROFILER_QUEUE
from services.trainer.main import create_app as trainer_app
from services.trainer.models import QUEUE as TRAINER_QUEUE
from shared.clients.profiler import ProfilerClient
from shared.clients.trainer import TrainerClient
from tests.services.jobs.linear_job import LinearSpec

WAITS = {
    "trainer": (trainer_app, TrainerClient, TRAINER_QUEUE, LinearSpec(steps=3), wait_trainer),
    "profiler": (
        profiler_app,
        ProfilerClient,
        PROFILER_QUEUE,
        BuildSpec(shape="tiny", length=16),
        wait_profiler,
    ),
}


@pytest.fixture(params=sorted(WAITS))
def service(request, sqlite_settings):
    create_app, client, queue, spec, wait = WAITS[request.param]
    with TestClient(create_app(sqlite_settings)) as http:
        with http.app.state.sessionmaker() as session:
            job_id = queue.submit(session, spec=spec)[0].id
        log = io.StringIO()
        run = SimpleNamespace(
            services=SimpleNamespace(**{request.param: client(http)}, check=lambda: None),
            reporter=Reporter(log),
            stopping=False,
        )
        yield run, wait, job_id, queue, http.app.state.sessionmaker, log


def test_a_stop_cancels_the_job_and_stops_the_run(service):
    run, wait, job_id, _queue, _sessions, _log = service
    run.stopping = True  # what SIGINT or SIGTERM sets
    with pytest.raises(Stopped):
        wait(run, "stage", job_id)
    (client,) = [c for name, c in vars(run.services).items() if name != "check"]
    job = client.job(job_id)
    assert job.state == "cancelled" and job.cancel_requested  # a later run submits it again


def test_a_failed_job_is_a_pipeline_error_and_the_bar_followed_it(service):
    run, wait, job_id, queue, sessions, log = service
    with sessions() as session:
        queue.claim(session, worker="w1", kinds=[queue.get(session, job_id=job_id).kind], job_id=job_id)
        queue.finish(session, job_id=job_id, worker="w1", state="failed", step=0, steps=1, error="it broke")
    with pytest.raises(PipelineError, match="it broke"):
        wait(run, "stage", job_id)
    assert "[stage]" in log.getvalue() and "failed" in log.getvalue()
