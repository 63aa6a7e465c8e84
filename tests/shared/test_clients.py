import pytest
from fastapi.testclient import TestClient

from shared.api import service_app
from shared.clients.base import ServiceClient, ServiceError
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
