"""The profiler over HTTP, through its typed client: a real worker process, SQLite and PostgreSQL."""

import os
import signal
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from services.profiler.main import create_app
from shared.clients.base import ServiceError
from shared.clients.profiler import ProfilerClient
from shared.schemas.lut import EstimateRequest, LutKey, OperatorCostRequest
from shared.schemas.operators import Architecture, IdentityOp, MLPOp, spec_name
from shared.settings import Settings

from .conftest import OPERATORS


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as http:
        yield ProfilerClient(http)


@pytest.fixture
def worker(settings):
    """`unast-profiler worker` in its own process, stopped with SIGTERM (a clean stop: exit code 0)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | settings.to_env()
    process = subprocess.Popen([sys.executable, "-m", "services.profiler.cli", "worker"], env=env)
    yield process
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0


def test_build_then_query_estimate_export_and_validate(client, worker, build_request, validation_request):
    job = client.build_lut(build_request)
    assert (job.kind, job.state, job.spec["kind"]) == ("build", "queued", "build")
    done = client.wait(job.id, timeout_s=300, poll_s=0.2)
    assert done.state == "succeeded", done.error
    assert done.progress == 1.0 and done.heartbeat_at is not None
    built = client.build_result(job.id)

    [device] = client.devices()
    assert device.id == built.device_id and device.kind == "cpu" and device.fingerprint["threads"] == 1
    assert client.device(device.id) == device

    lut = client.lut(built.lut_id)
    assert lut.operator_count == 6 and {e.operator for e in lut.entries} >= set(OPERATORS)
    assert [s.id for s in client.luts(device_id=device.id, shape="tiny", regime="prefill", length=16)] == [
        lut.id
    ]
    assert client.luts(regime="decode") == []

    key = LutKey(shape="tiny", length=16)
    mlp = MLPOp(intermediate_size=48)
    cost = client.operator_cost(device.id, OperatorCostRequest(**key.model_dump(), operator=mlp))
    assert (
        cost.name == "mlp_i48" and cost.lut_id == lut.id and cost.costs.weight_bytes == (64 + 3 * 64 * 48) * 4
    )
    assert cost.latency.runs >= build_request.min_runs

    arch = Architecture.teacher(key.shape).replace("block1.mlp", mlp).replace("block0.attn", IdentityOp())
    estimate = client.estimate(device.id, EstimateRequest(**key.model_dump(), architecture=arch))
    by_name = {e.name: e.costs.latency_ms for e in lut.entries}
    expected = lut.fixed.costs.latency_ms + sum(by_name[spec_name(spec)] for _, _, spec in arch.slots())
    assert estimate.latency_ms == pytest.approx(expected)

    table = client.export(lut.id)
    assert len(table.slots) == 4 and all(sum(c.reference for c in s.candidates) == 1 for s in table.slots)

    job = client.validate_lut(lut.id, validation_request)
    done = client.wait(job.id, timeout_s=300, poll_s=0.2)
    assert done.state == "succeeded", done.error
    checked = client.validation_result(job.id)
    assert (checked.lut_id, checked.device_id) == (lut.id, device.id)
    validation = client.validation(checked.validation_id)
    assert validation.lut_id == lut.id and len(validation.architectures) == 3
    assert validation.max_abs_error == max(abs(a.error) for a in validation.architectures)
    assert [v.id for v in client.validations(lut.id)] == [validation.id]

    # rebuilding the same LUT replaces it in place
    done = client.wait(client.build_lut(build_request).id, timeout_s=300, poll_s=0.2)
    assert done.state == "succeeded" and client.build_result(done.id).lut_id == lut.id
    assert len(client.luts()) == 1
    succeeded = client.jobs(state="succeeded").jobs  # newest first: the rebuild
    assert [j.kind for j in succeeded] == ["build", "validate", "build"] and succeeded[0].id == done.id

    # what the LUT does not hold is a 404 that says so
    with pytest.raises(ServiceError) as err:
        client.operator_cost(
            device.id, OperatorCostRequest(**key.model_dump(), operator=MLPOp(intermediate_size=8))
        )
    assert err.value.status == 404 and "not in LUT" in err.value.message
    with pytest.raises(ServiceError) as err:
        client.estimate(device.id, EstimateRequest(**{**key.model_dump(), "length": 17}, architecture=arch))
    assert err.value.status == 404 and "no LUT on device" in err.value.message
    with pytest.raises(ServiceError) as err:
        client.estimate(
            device.id,
            EstimateRequest(
                **key.model_dump(), architecture=arch.replace("block0.mlp", MLPOp(intermediate_size=8))
            ),
        )
    assert err.value.status == 404 and "block0.mlp" in err.value.message


@pytest.mark.parametrize(
    "path",
    [
        "/v1/luts/999",
        "/v1/luts/999/export",
        "/v1/luts/999/validations",
        "/v1/devices/999",
        "/v1/jobs/999",
        "/v1/validations/999",
    ],
)
def test_missing_things_are_404(sqlite_settings, path):
    with TestClient(create_app(sqlite_settings)) as http:
        r = http.get(path)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_queries_on_a_missing_device_are_404(sqlite_settings):
    body = {"shape": "tiny", "length": 16, "operator": {"kind": "linear"}}
    with TestClient(create_app(sqlite_settings)) as http:
        r = http.post("/v1/devices/5/operator-cost", json=body)
        assert r.status_code == 404 and "device 5" in r.json()["error"]["message"]
        assert http.post("/v1/luts/5/validations", json={}).status_code == 404


TINY = {"shape": "tiny", "length": 16}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**TINY, "operators": [{"kind": "conv"}]}, "body.operators.0"),
        (
            {**TINY, "operators": [{"kind": "attention", "num_heads": 3, "num_kv_heads": 2, "head_dim": 8}]},
            "body.operators.0.attention",
        ),
        (
            {**TINY, "operators": [{"kind": "mlp", "intermediate_size": 0}]},
            "body.operators.0.mlp.intermediate_size",
        ),
        ({**TINY, "batch": 0}, "body.batch"),
        ({**TINY, "length": -3}, "body.length"),
        ({"shape": "tiny", "length": 4096}, "body.length"),  # beyond max_position_embeddings
        ({"shape": "gpt5", "length": 16}, "body.shape"),
        (
            {
                **TINY,
                "shape": {
                    **TINY,
                    "vocab_size": 512,
                    "hidden_size": 64,
                    "num_layers": 2,
                    "num_heads": 4,
                    "num_kv_heads": 3,
                    "head_dim": 16,
                    "intermediate_size": 8,
                },
            },
            "body.shape",
        ),
        ({**TINY, "dtype": "float8"}, "body.dtype"),
        ({**TINY, "time_cap_s": 0}, "body.time_cap_s"),
        ({**TINY, "time_cap_s": 7201}, "time_cap_s"),  # over UNAST_PROFILER_MAX_JOB_S
        (
            {
                "shape": "llama3-8b",
                "length": 16,
                "operators": [{"kind": "mlp", "intermediate_size": 1048576}],
            },
            "operators",
        ),
    ],
)
def test_bad_builds_are_422_naming_the_field_and_start_nothing(sqlite_settings, body, field):
    with TestClient(create_app(sqlite_settings)) as http:
        r = http.post("/v1/luts", json=body)
        assert r.status_code == 422, r.text
        fields = [d["field"] for d in r.json()["error"]["details"]]
        assert any(f.startswith(field) for f in fields), fields
        assert http.get("/v1/jobs").json()["total"] == 0


def test_builds_that_would_take_too_long_are_refused(sqlite_settings):
    # the small shape's pool at 2048 tokens: tens of seconds of minimum runs on this CPU, over a 5 s limit
    settings = Settings(database_url=sqlite_settings.database_url, profiler_max_job_s=5)
    with TestClient(create_app(settings)) as http:
        r = http.post("/v1/luts", json={"shape": "small", "length": 2048, "time_cap_s": 1})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "length"
        assert "would take about" in r.json()["error"]["message"]
        # llama3-8b at 8192 tokens: hours here, if it fits in memory at all
        r = http.post("/v1/luts", json={"shape": "llama3-8b", "length": 8192, "time_cap_s": 1})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] in ("length", "shape")
        assert http.get("/v1/jobs").json()["total"] == 0


def test_building_needs_the_token_when_one_is_set(sqlite_settings):
    settings = Settings(database_url=sqlite_settings.database_url, api_token="s3cret")
    with TestClient(create_app(settings)) as http:
        assert http.post("/v1/luts", json=TINY).status_code == 401
        assert http.post("/v1/luts/1/validations", json={}).status_code == 401
        assert http.get("/v1/luts").status_code == 200


def test_openapi_documents_every_endpoint(sqlite_settings):
    with TestClient(create_app(sqlite_settings)) as http:
        paths = http.get("/openapi.json").json()["paths"]
    assert set(paths) >= {
        "/v1/devices",
        "/v1/devices/{device_id}",
        "/v1/devices/{device_id}/operator-cost",
        "/v1/devices/{device_id}/estimate",
        "/v1/luts",
        "/v1/luts/{lut_id}",
        "/v1/luts/{lut_id}/export",
        "/v1/luts/{lut_id}/validations",
        "/v1/validations/{validation_id}",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/log",
        "/v1/jobs/{job_id}/result",
    }
