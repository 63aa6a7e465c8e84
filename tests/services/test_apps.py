"""Each service's app starts, migrates its store, and answers health, readiness and docs."""

import pytest
from fastapi.testclient import TestClient

from services.profiler.main import create_app as profiler_app
from services.search.main import create_app as search_app
from services.trainer.main import create_app as trainer_app
from shared.settings import Settings


@pytest.mark.parametrize("create_app", [profiler_app, trainer_app])
def test_stateful_services_migrate_and_report_ready(create_app, settings):
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.get("/openapi.json").json()["info"]["title"] == client.app.title
        assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("create_app", [profiler_app, trainer_app])
def test_unreachable_database_is_not_ready(create_app):
    app = create_app(Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"))
    client = TestClient(app)  # no lifespan: the database is never reached
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "not_ready"


def test_search_is_ready_without_a_database():
    with TestClient(search_app(Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"))) as c:
        assert c.get("/readyz").json()["status"] == "ready"
