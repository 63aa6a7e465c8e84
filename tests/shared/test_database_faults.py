"""A database that goes away or hangs under running services and workers: bounded 503s with
Retry-After that name no host, port or database; /healthz answers throughout; idle workers ride it
out; at start-up everything waits for it a configured time, then exits with one line.

The faults are made by a TCP proxy between the service and PostgreSQL that the test switches between
forwarding, refusing connections, and hanging (accepting connections and answering nothing). Waits
are bounded against hangs; nothing is timed.
"""

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.trainer.main import create_app as trainer_app
from services.trainer.models import QUEUE
from shared.settings import Settings
from tests.db_proxy import Proxy, free_port
from tests.services.jobs.linear_job import LinearSpec, linear_kind, run_linear
from tests.services.trainer.conftest import fast

HANG_GUARD_S = 90  # against a hang, not a measurement
FAULT_SETTINGS = {
    "database_connect_timeout_s": 2,
    "database_pool_timeout_s": 1.0,
    "database_statement_timeout_s": 2.0,
}


@pytest.fixture
def proxy(database_url) -> Iterator[tuple[Proxy, str]]:
    """A proxy to the test's PostgreSQL database, and the URL through it."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        pytest.skip("the proxy stands between a service and PostgreSQL")
    p = Proxy((url.host or "127.0.0.1", url.port or 5432))
    yield p, url.set(host="127.0.0.1", port=p.port).render_as_string(hide_password=False)
    p.close()


def clean_env(**settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")}
    return env | {f"UNAST_{k.upper()}": str(v) for k, v in settings.items()} | {"PYTHONUNBUFFERED": "1"}


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} in {HANG_GUARD_S} s"
        time.sleep(0.1)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def assert_unavailable(response: httpx.Response, database_url: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    url = make_url(database_url)
    for secret in (url.host, url.port and str(url.port), url.database, "psycopg", "connection"):
        if secret is None:
            continue
        assert secret not in response.text, (secret, response.text)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_running_service_answers_503_when_the_database_goes_away_or_hangs(proxy, tmp_path):
    p, url = proxy
    port = free_port()
    env = clean_env(
        database_url=url, trainer_port=port, artifacts_root=tmp_path / "artifacts", **FAULT_SETTINGS
    )
    log = tmp_path / "service.log"
    service = subprocess.Popen(
        [sys.executable, "-m", "services.trainer.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{base}/readyz"), "ready service")
        assert httpx.get(f"{base}/v1/jobs").status_code == 200

        p.refuse()  # connections refused mid-run
        assert_unavailable(httpx.get(f"{base}/v1/jobs", timeout=HANG_GUARD_S), url)
        assert_unavailable(httpx.get(f"{base}/v1/jobs/some-id", timeout=HANG_GUARD_S), url)
        assert_unavailable(httpx.get(f"{base}/readyz", timeout=HANG_GUARD_S), url)
        assert httpx.get(f"{base}/healthz", timeout=HANG_GUARD_S).status_code == 200

        p.hang()  # connections accepted, nothing answered
        with ThreadPoolExecutor(60) as pool:
            stuck = [pool.submit(httpx.get, f"{base}/v1/jobs", timeout=HANG_GUARD_S) for _ in range(60)]
            time.sleep(0.5)  # let them reach the database
            health = httpx.get(f"{base}/healthz", timeout=HANG_GUARD_S)  # answered meanwhile
            ready = httpx.get(f"{base}/readyz", timeout=HANG_GUARD_S)
            responses = [f.result() for f in stuck]
        assert health.status_code == 200
        assert ready.status_code == 503 and int(ready.headers["retry-after"]) > 0
        for r in responses:
            assert_unavailable(r, url)

        p.forward()  # back: the service recovers by itself
        wait_until(lambda: answers(f"{base}/v1/jobs"), "recovered service")
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
    finally:
        service.terminate()
        service.wait(HANG_GUARD_S)
    assert "the database failed" in log.read_text()  # the reason is in the log, not the response


def test_a_statement_that_waits_too_long_is_a_503(settings):
    """PostgreSQL: a table locked by someone else (statement_timeout); SQLite: the write lock held
    (busy timeout). Either way the request ends within the timeout, as a 503."""
    settings = Settings(**(settings.model_dump() | FAULT_SETTINGS | {"database_statement_timeout_s": 0.5}))
    with TestClient(trainer_app(settings)) as http:
        assert http.get("/v1/jobs").status_code == 200
        blocker = create_engine(settings.database_url)
        with blocker.connect() as conn:
            if blocker.dialect.name == "postgresql":
                conn.execute(text("LOCK TABLE trainer_jobs IN ACCESS EXCLUSIVE MODE"))
                r = http.get("/v1/jobs")
            else:
                conn.exec_driver_sql("BEGIN EXCLUSIVE")
                r = http.post("/v1/jobs/some-id/cancel")  # a write
            conn.rollback()
        blocker.dispose()
        assert_unavailable(r, settings.database_url)
        assert http.get("/v1/jobs").status_code == 200


def test_an_unreachable_database_is_a_503_on_every_route(sqlite_settings):
    settings = Settings(
        **(sqlite_settings.model_dump() | FAULT_SETTINGS)
        | {"database_url": f"postgresql+psycopg://someone@127.0.0.1:{free_port()}/secretdb"}
    )
    http = TestClient(trainer_app(settings))  # no lifespan: nothing to migrate
    for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("GET", "/v1/jobs/x/log")):
        assert_unavailable(http.request(method, path), settings.database_url)
    r = http.get("/readyz")
    assert_unavailable(r, settings.database_url)
    assert r.json()["error"]["message"] == "not ready: the database does not answer"
    assert http.get("/healthz").status_code == 200


# -- workers --------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_idle_worker_rides_out_a_database_blip(proxy, settings, sessions):
    from services.trainer.worker import trainer_worker

    p, url = proxy
    through_proxy = fast(settings, database_url=url, **FAULT_SETTINGS)
    worker = trainer_worker(through_proxy, {"linear": linear_kind(run_linear)})
    stop = threading.Event()
    thread = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        with sessions() as session:
            first = QUEUE.submit(session, spec=LinearSpec(steps=3))[0].id
        wait_until(lambda: state(sessions, first) == "succeeded", "first job")
        p.refuse()
        time.sleep(1.0)  # several polls fail meanwhile
        p.hang()
        time.sleep(3.0)  # one poll at least waits out the connect timeout
        assert thread.is_alive()
        p.forward()
        with sessions() as session:
            second = QUEUE.submit(session, spec=LinearSpec(steps=3, seed=1))[0].id
        wait_until(lambda: state(sessions, second) == "succeeded", "job after the blip")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(HANG_GUARD_S)


def state(sessionmaker, job_id: str) -> str:
    with sessionmaker() as session:
        return QUEUE.get(session, job_id=job_id).state


@pytest.mark.parametrize(
    "command",
    [  # each way in: an API (shared/serve.py), a worker (services/jobs/worker.py), the launcher
        ("services.trainer.cli", "serve"),
        ("services.profiler.cli", "worker"),
        ("services.cli", "run"),
    ],
)
def test_at_start_up_the_database_is_awaited_then_a_one_line_exit(command, tmp_path):
    env = clean_env(
        database_url=f"postgresql+psycopg://someone@127.0.0.1:{free_port()}/nowhere",
        database_startup_wait_s=2,
        artifacts_root=tmp_path / "artifacts",
        profiler_port=free_port(),
        search_port=free_port(),
        trainer_port=free_port(),
    )
    done = subprocess.run(
        [sys.executable, "-m", *command], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    assert sum("trying again" in line for line in lines) >= 2, done.stderr  # one line per attempt
    assert "did not answer within 2 s" in lines[-1] and "giving up" in lines[-1], done.stderr
