"""Reads and builds an attacker or a careless client would try, on SQLite and PostgreSQL: ids beyond
the database's integers and NUL characters are 422s naming the parameter, never 500s."""

import pytest
from fastapi.testclient import TestClient

from services.profiler.main import create_app


@pytest.fixture
def http(settings):
    with TestClient(create_app(settings)) as client:
        yield client


def field_of(response) -> str:
    return response.json()["error"]["details"][0]["field"]


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/devices/2147483648", "path.device_id"),
        ("GET", "/v1/devices/9223372036854775808", "path.device_id"),
        ("GET", "/v1/luts/2147483648", "path.lut_id"),
        ("GET", "/v1/luts/2147483648/export", "path.lut_id"),
        ("GET", "/v1/luts/2147483648/validations", "path.lut_id"),
        ("GET", "/v1/validations/2147483648", "path.validation_id"),
        ("GET", "/v1/luts?device_id=2147483648", "query.device_id"),
        ("GET", "/v1/luts?batch=9223372036854775808", "query.batch"),
        ("GET", "/v1/luts?length=9223372036854775808", "query.length"),
        ("POST", "/v1/devices/2147483648/operator-cost", "path.device_id"),
        ("GET", "/v1/jobs/%00", "path.job_id"),
        ("GET", "/v1/luts?shape=%00", "query.shape"),
    ],
)
def test_out_of_range_ids_and_nul_are_422(http, method, path, field):
    body = {"lut_id": 1, "operator": {"kind": "linear"}} if method == "POST" else None
    r = http.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert field_of(r) == field


def test_the_largest_id_is_a_plain_404(http):
    assert http.get("/v1/devices/2147483647").status_code == 404
    assert http.get("/v1/luts/2147483647").status_code == 404


def test_nul_in_a_build_is_422(http):
    r = http.post("/v1/luts", json={"shape": "ti\u0000ny", "length": 16})
    assert r.status_code == 422 and field_of(r) == "body.shape"


def test_id_bounds_show_in_the_openapi(http):
    paths = http.get("/openapi.json").json()["paths"]
    device_id = paths["/v1/devices/{device_id}"]["get"]["parameters"][0]["schema"]
    assert (device_id["minimum"], device_id["maximum"]) == (1, 2**31 - 1)
