"""A request the solve pool refuses costs nothing: its 429 comes before its model is built (issue 20,
item 7)."""

import pytest
from fastapi.testclient import TestClient

from services.search import service
from services.search.main import create_app
from shared.settings import Settings
from tests.services.search.test_hardening import Blocked, body, post_in_thread, sweep_body


def counted(prepare, calls: list):
    def wrapper(*args):
        calls.append(prepare.__name__)
        return prepare(*args)

    return wrapper


@pytest.mark.parametrize(("path", "payload"), [("/v1/search", body()), ("/v1/search/sweep", sweep_body())])
def test_a_refused_request_builds_nothing(monkeypatch, path, payload):
    held = Blocked()
    monkeypatch.setattr(service, "run_search", held)
    built = []
    monkeypatch.setattr(service, "prepare_search", counted(service.prepare_search, built))
    monkeypatch.setattr(service, "prepare_sweep", counted(service.prepare_sweep, built))
    responses = []
    with TestClient(create_app(Settings(search_concurrency=1, search_queue=0))) as client:
        running = post_in_thread(client, body(), responses)
        try:
            assert held.started.acquire(timeout=30)
            refused = client.post(path, json=payload)
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "1"
            assert built == ["prepare_search"]  # the running search's; the refused one built nothing
        finally:
            held.release.set()
            running.join()
    assert [r.status_code for r in responses] == [200]
