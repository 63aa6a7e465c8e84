import httpx
import pytest
from fastapi.testclient import TestClient

from shared.api import service_app
from shared.clients.base import ServiceClient, ServiceError
from shared.clients.jobs import JobsClient
from shared.clients.search import SearchClient
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


def counted(answers: list) -> tuple[httpx.Client, list[str]]:
    """A client whose transport gives these answers in turn (an int: that status; an exception: raised)."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        answer = answers[min(len(calls), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        status, retry_after = answer if isinstance(answer, tuple) else (answer, None)
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        body = {"ok": True} if status < 400 else {"error": {"code": "busy", "message": "later"}}
        return httpx.Response(status, json=body, headers=headers)

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://svc"), calls


def test_what_a_service_asks_to_retry_is_retried_within_the_budget():
    http, calls = counted([(503, "0"), (429, "0"), 200])
    assert SearchClient(http, retry_s=10).request("GET", "/x") == {"ok": True} and len(calls) == 3
    http, calls = counted([500, 200])  # an error it did not ask to retry comes back at once
    with pytest.raises(ServiceError) as err:
        SearchClient(http, retry_s=10).request("GET", "/x")
    assert err.value.status == 500 and len(calls) == 1
    http, calls = counted([(503, "0"), 200])  # retry_s 0 (how tests drive services): no retry
    with pytest.raises(ServiceError):
        SearchClient(http).request("GET", "/x")
    assert len(calls) == 1


def test_a_service_that_stays_away_ends_in_one_service_error_after_the_budget():
    http, calls = counted([httpx.ConnectError("connection refused")])
    with pytest.raises(ServiceError) as err:
        SearchClient(http, retry_s=1.0).request("GET", "/x")
    assert err.value.status == 503 and err.value.code == "unreachable" and "\n" not in str(err.value)
    assert 2 <= len(calls) <= 3  # tried again after 0.5 s, then the next wait (1 s) would pass the budget
    http, calls = counted([(503, "30")])  # Retry-After beyond the budget: the 503 comes back
    with pytest.raises(ServiceError) as err:
        SearchClient(http, retry_s=1.0).request("GET", "/x")
    assert err.value.status == 503 and len(calls) == 1
