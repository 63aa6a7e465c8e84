"""One language with the trainer: a LUT built from a model directory (the demo teacher's, as a trainer
job takes it), queried by LUT id or shape hash, estimating a search solution as it is, and a
validation that times given architectures."""

import json
import shutil
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.profiler.main import create_app
from services.profiler.worker import profiler_worker
from shared.clients.profiler import ProfilerClient
from shared.schemas.lut import BuildRequest, EstimateRequest, ValidationRequest, shape_hash
from shared.schemas.operators import Architecture, IdentityOp, LinearOp, MLPOp, spec_name
from shared.schemas.shape import ModelShape

from .conftest import QUICK

DEMO = Path(__file__).parents[3] / "models" / "shakespeare-teacher"


@pytest.fixture
def profiler(sqlite_settings):
    teacher = sqlite_settings.input_roots[0] / "shakespeare-teacher"
    teacher.mkdir(parents=True)
    shutil.copyfile(DEMO / "config.json", teacher / "config.json")
    with TestClient(create_app(sqlite_settings)) as http:
        yield ProfilerClient(http), teacher, sqlite_settings


def build(client: ProfilerClient, settings, shape: str, **extra) -> int:
    operators = [IdentityOp(), LinearOp(), MLPOp(intermediate_size=256)]
    job = client.build_lut(BuildRequest(shape=shape, length=32, operators=operators, **QUICK, **extra))
    profiler_worker(settings).run_one(job.id, threading.Event())  # what a worker does with it
    done = client.job(job.id)
    assert done.state == "succeeded", done.error
    return client.build_result(job.id).lut_id


def test_a_lut_from_the_teachers_directory_answers_by_id_and_by_shape_hash(profiler):
    client, teacher, settings = profiler
    lut_id = build(client, settings, str(teacher))
    lut = client.lut(lut_id)
    expected = ModelShape.from_hf_config(json.loads((DEMO / "config.json").read_text()))
    assert lut.shape.name == "shakespeare-teacher" and shape_hash(lut.shape) == shape_hash(expected)
    # its config.json names the same shape: the same LUT, rebuilt in place
    assert build(client, settings, str(teacher / "config.json")) == lut_id
    lut = client.lut(lut_id)  # as rebuilt
    assert [s.id for s in client.luts(shape="shakespeare-teacher")] == [lut_id]
    assert [s.id for s in client.luts(shape=str(teacher))] == [lut_id]  # by the directory, as built
    assert [s.id for s in client.luts(shape=lut.shape_hash)] == [lut_id]

    # a search solution, passed unchanged, by LUT id and by shape hash
    choices = Architecture.teacher(expected).replace("block2.mlp", MLPOp(intermediate_size=256))
    choices = choices.replace("block0.attn", IdentityOp()).replace("block5.mlp", LinearOp())
    solution = {"rank": 1, "choices": choices.choices, "objective": 0.1, "costs": {}, "optimal": True}
    by_id = client.request(
        "POST", f"/v1/devices/{lut.device_id}/estimate", json={"lut_id": lut_id, "architecture": solution}
    )
    by_hash = client.estimate(
        lut.device_id, EstimateRequest(shape=lut.shape_hash, length=32, architecture=solution)
    )
    entries = {e.name: e.costs.latency_ms for e in lut.entries}
    expected_ms = lut.fixed.costs.latency_ms + sum(entries[spec_name(op)] for _, _, op in choices.slots())
    assert by_id["latency_ms"] == pytest.approx(expected_ms) and by_hash.latency_ms == by_id["latency_ms"]

    # a validation times exactly the architectures it is given
    job = client.validate_lut(lut_id, ValidationRequest(architectures=[solution], **QUICK))
    profiler_worker(settings).run_one(job.id, threading.Event())
    validation = client.validation(client.validation_result(job.id).validation_id)
    assert [a.architecture for a in validation.architectures] == [choices]


def test_names_that_name_nothing_are_422s_naming_the_field(profiler):
    client, teacher, settings = profiler
    for shape in ("no-such-model", "0123456789abcdef", "/etc"):
        r = client.http.post("/v1/luts", json={"shape": shape, "length": 32})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "body.shape", r.text
    r = client.http.post("/v1/luts", json={"shape": str(teacher), "length": 100_000})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "body.length", r.text
    lut_id = build(client, settings, str(teacher))
    device = client.lut(lut_id).device_id
    short = {"choices": {"block0.attn": "identity", "block0.mlp": "identity"}}
    r = client.http.post(f"/v1/devices/{device}/estimate", json={"lut_id": lut_id, "architecture": short})
    assert (
        r.status_code == 422
        and r.json()["error"]["details"][0]["field"] == "body.architecture.choices.block1.attn"
    )
    r = client.http.post(f"/v1/devices/{device}/estimate", json={"architecture": short})
    assert r.status_code == 422 and "lut_id" in r.text
    r = client.http.post(f"/v1/luts/{lut_id}/validations", json={"architectures": [short], **QUICK})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"].startswith(
        "body.architectures.0.choices"
    )


def test_a_family_teacher_gets_its_own_lut_and_an_unsupported_one_a_422(profiler, tmp_path):
    client, teacher, settings = profiler
    config = json.loads((DEMO / "config.json").read_text())
    qwen3 = teacher.parent / "qwen3-teacher"
    qwen3.mkdir()
    (qwen3 / "config.json").write_text(json.dumps(config | {"model_type": "qwen3"}))
    llama_lut, qwen3_lut = build(client, settings, str(teacher)), build(client, settings, str(qwen3))
    assert llama_lut != qwen3_lut  # same sizes, another family: never the same LUT
    assert client.lut(qwen3_lut).shape.family == "qwen3"
    gelu = teacher.parent / "gelu-teacher"
    gelu.mkdir()
    (gelu / "config.json").write_text(json.dumps(config | {"hidden_act": "gelu"}))
    r = client.http.post("/v1/luts", json={"shape": str(gelu), "length": 32})
    assert r.status_code == 422, r.text
    detail = r.json()["error"]["details"][0]
    assert detail["field"] == "body.shape" and "hidden_act: 'gelu' is not supported" in detail["message"]
