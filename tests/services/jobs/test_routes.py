"""One face for every job: the trainer's and the profiler's /v1/jobs answer alike (services/jobs/
routes.py) -- listed newest first with filters, paged, with a total; read, cancelled, logged and their
results -- and their readers take back a job whose worker was lost by the service's own rule."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from services.jobs.queue import JobQueue
from services.jobs.tables import utcnow
from services.profiler.jobs import BuildSpec, ValidationSpec
from services.profiler.main import create_app as profiler_app
from services.profiler.models import QUEUE as PROFILER_QUEUE
from services.trainer.main import create_app as trainer_app
from services.trainer.models import QUEUE as TRAINER_QUEUE
from shared.clients.base import ServiceError
from shared.clients.jobs import JobsClient
from shared.clients.profiler import ProfilerClient
from shared.clients.trainer import TrainerClient
from shared.schemas.jobs import Job
from shared.settings import Settings
from tests.services.jobs.linear_job import LinearSpec
from tests.services.profiler.conftest import OPERATORS


class OtherSpec(BaseModel):
    """A second kind of trainer job (the queue stores any kind; no worker runs here)."""

    kind: Literal["other"] = "other"


@dataclass
class Service:
    client: JobsClient
    queue: JobQueue
    sessions: sessionmaker[Session]
    specs: tuple[BaseModel, BaseModel]  # two kinds of its jobs
    result: dict[str, Any]  # a result of the first kind
    lost: str  # what its readers make of a running job whose worker was lost


SERVICES = {
    "trainer": lambda: (
        trainer_app,
        TrainerClient,
        TRAINER_QUEUE,
        (LinearSpec(steps=3), OtherSpec()),
        {"loss": 0.5, "weight": [], "bias": []},
        "queued",  # resumed from its last checkpoint by the next worker
    ),
    "profiler": lambda: (
        profiler_app,
        ProfilerClient,
        PROFILER_QUEUE,
        (BuildSpec(shape="tiny", length=16, operators=OPERATORS), ValidationSpec(lut_id=1, count=3)),
        {"lut_id": 1, "device_id": 1},
        "failed",  # a measurement is not resumed
    ),
}


@pytest.fixture(params=sorted(SERVICES))
def service(request, settings: Settings) -> Iterator[Service]:
    create_app, client, queue, specs, result, lost = SERVICES[request.param]()
    with TestClient(create_app(settings)) as http:
        yield Service(client(http), queue, http.app.state.sessionmaker, specs, result, lost)


def submit(service: Service, spec: BaseModel, *, minutes_ago: int) -> str:
    """A queued job, made `minutes_ago` (so that the order is the test's, not the clock's)."""
    Row = service.queue.Job
    with service.sessions() as session:
        job_id = service.queue.submit(session, spec=spec)[0].id
        created = utcnow() - timedelta(minutes=minutes_ago)
        session.execute(update(Row).where(Row.id == job_id).values(created_at=created))
        session.commit()
    return job_id


def run(service: Service, job_id: str, **finish: Any) -> None:
    """Claim the job as a worker named w1; finish it too when `finish` says how."""
    with service.sessions() as session:
        kind = service.queue.get(session, job_id=job_id).kind
        assert service.queue.claim(session, worker="w1", kinds=[kind], job_id=job_id) is not None
        if finish:
            service.queue.finish(session, job_id=job_id, worker="w1", step=1, steps=1, **finish)


def test_jobs_are_listed_newest_first_filtered_and_paged(service):
    first, second = service.specs
    ids = [submit(service, spec, minutes_ago=10 - i) for i, spec in enumerate([first, second, first, first])]
    run(service, ids[2], state="succeeded", result=service.result)
    client = service.client

    page = client.jobs()
    assert page.total == 4 and [j.id for j in page.jobs] == ids[::-1]
    assert all(isinstance(j, Job) for j in page.jobs)
    assert [j.id for j in client.jobs(limit=2, offset=1).jobs] == [ids[2], ids[1]]
    assert client.jobs(limit=2, offset=1).total == 4
    of_kind = client.jobs(kind=first.kind)
    assert of_kind.total == 3 and [j.id for j in of_kind.jobs] == [ids[3], ids[2], ids[0]]
    assert [j.id for j in client.jobs(state="succeeded").jobs] == [ids[2]]
    assert client.jobs(state="queued", kind=second.kind).total == 1
    assert client.jobs(kind="no-such-kind").total == 0
    for bad in ({"state": "sleeping"}, {"limit": 0}, {"limit": 501}, {"offset": -1}):
        assert client.http.get("/v1/jobs", params=bad).status_code == 422


def test_one_job_its_log_and_its_result(service):
    client = service.client
    job_id = submit(service, service.specs[0], minutes_ago=1)
    job = client.job(job_id)
    assert (job.id, job.kind, job.state, job.progress, job.attempt) == (
        job_id,
        service.specs[0].kind,
        "queued",
        0.0,
        0,
    )
    assert job.spec == service.specs[0].model_dump(mode="json")
    log = client.log(job_id, tail=5)
    assert (log.job_id, log.state, log.lines) == (job_id, "queued", [])
    with pytest.raises(ServiceError) as err:
        client.raw_result(job_id)
    assert err.value.status == 409 and err.value.details == {"state": "queued"}

    run(service, job_id, state="succeeded", result=service.result)
    with service.sessions() as session:
        service.queue.append_log(session, job_id=job_id, attempt=1, message="done, as told")
    assert client.job(job_id).state == "succeeded" and client.job(job_id).progress == 1.0
    assert [line.message for line in client.log(job_id).lines] == ["done, as told"]
    answer = client.raw_result(job_id)
    assert (answer.job_id, answer.kind, answer.result) == (job_id, service.specs[0].kind, service.result)

    for path in ("/v1/jobs/nope", "/v1/jobs/nope/log", "/v1/jobs/nope/result"):
        assert client.http.get(path).status_code == 404
    assert client.http.get(f"/v1/jobs/{job_id}/log", params={"tail": 0}).status_code == 422


def test_cancel(service):
    client = service.client
    queued, running, done = (submit(service, service.specs[0], minutes_ago=3 - i) for i in range(3))
    run(service, running)
    run(service, done, state="succeeded", result=service.result)

    cancelled = client.cancel(queued)  # at once
    assert cancelled.state == "cancelled" and cancelled.cancel_requested and cancelled.finished_at
    assert client.cancel(queued).state == "cancelled"  # twice is harmless
    with pytest.raises(ServiceError) as err:
        client.raw_result(queued)
    assert err.value.status == 409 and err.value.details == {"state": "cancelled"}

    asked = client.cancel(running)  # its worker stops it at its next step or status
    assert (asked.state, asked.cancel_requested) == ("running", True)

    with pytest.raises(ServiceError) as err:
        client.cancel(done)
    assert err.value.status == 409 and err.value.details == {"state": "succeeded"}
    with pytest.raises(ServiceError) as err:
        client.cancel("nope")
    assert err.value.status == 404


def test_a_job_whose_worker_was_lost_is_taken_back_when_read(service):
    client = service.client
    job_id = submit(service, service.specs[0], minutes_ago=1)
    run(service, job_id)
    assert client.job(job_id).state == "running"
    Row = service.queue.Job
    with service.sessions() as session:  # silent for a day: longer than any service's stale limit
        silent = utcnow() - timedelta(days=1)
        session.execute(update(Row).where(Row.id == job_id).values(heartbeat_at=silent))
        session.commit()
    assert [j.state for j in client.jobs().jobs] == [service.lost]
    assert client.job(job_id).state == service.lost
    assert any("worker lost" in line.message for line in client.log(job_id).lines)


@pytest.mark.parametrize("create_app", [trainer_app, profiler_app], ids=["trainer", "profiler"])
def test_cancelling_needs_the_token_and_reading_does_not(create_app, sqlite_settings):
    secured = Settings(**(sqlite_settings.model_dump() | {"api_token": "s3cret"}))
    with TestClient(create_app(secured)) as http:
        assert http.get("/v1/jobs").json() == {"jobs": [], "total": 0}
        assert http.post("/v1/jobs/nope/cancel").status_code == 401
        authorised = {"Authorization": "Bearer s3cret"}
        assert http.post("/v1/jobs/nope/cancel", headers=authorised).status_code == 404
