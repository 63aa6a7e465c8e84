import httpx
import pytest
from fastapi.testclient import TestClient

from shared.api import service_app
from shared.clients.base import ServiceClient, ServiceError
from shared.clients.jobs import JobsClient
from shared.schemas.jobs import FINISHED
from shared.settings import Settings


class EchoClient(ServiceClient):
    service = "search"


def test_client_reads_health_and_raises_service_errors():
    client = EchoClient(TestClient(service_app("echo", Settings(), description="echo")))
    assert client.health()["status"] == "ok"
    assert client.ready()["status"] == "ready"
    with pytest.raises(ServiceError) as err:
        client.request("GET", "/missing")
    assert (err.value.status, err.value.code) == (404, "not_found")


def test_client_from_settings_targets_the_service_and_sends_the_token():
    client = EchoClient.from_settings(Settings(search_port=9123, api_token="t0k"))
    assert str(client.http.base_url) == "http://127.0.0.1:9123"
    assert client.http.headers["Authorization"] == "Bearer t0k"
    client.close()


def job_body(state: str, progress: float) -> dict:
    return {
        "id": "j1",
        "kind": "build",
        "spec": {"kind": "build"},
        "state": state,
        "step": 0,
        "steps": None,
        "progress": progress,
        "message": state,
        "eta_s": None,
        "attempt": 1,
        "cancel_requested": False,
        "worker": None,
        "heartbeat_at": None,
        "error": None,
        "artifact_dir": None,
        "idempotency_key": None,
        "created_at": "2026-12-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
    }


def polled(*states: str) -> JobsClient:
    """A client whose service answers the job's states in turn, the last one from then on."""
    answers = iter(states)
    last = [states[0]]

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/j1"
        last[0] = next(answers, last[0])
        return httpx.Response(200, json=job_body(last[0], 1.0 if last[0] == "succeeded" else 0.5))

    return JobsClient(httpx.Client(transport=httpx.MockTransport(answer), base_url="http://service"))


@pytest.mark.parametrize("end", sorted(FINISHED))
def test_wait_polls_until_the_job_finished_showing_every_poll(end):
    seen = []
    job = polled("queued", "running", "running", end).wait("j1", seen.append, poll_s=0)
    assert job.state == end and [j.state for j in seen] == ["queued", "running", "running", end]


def test_wait_stops_when_on_progress_raises_or_time_is_up():
    class Stopped(Exception):
        pass

    def stop_when_running(job):
        if job.state == "running":
            raise Stopped()

    with pytest.raises(Stopped):
        polled("queued", "running", "succeeded").wait("j1", stop_when_running, poll_s=0)
    with pytest.raises(TimeoutError, match="still running"):
        polled("running").wait("j1", poll_s=0.01, timeout_s=0.05)
