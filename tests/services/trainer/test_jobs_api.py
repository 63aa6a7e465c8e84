"""The jobs API: submit (idempotently), read, list, cancel, log, result -- and bad specs as 422s."""

import json

import pytest
from fastapi.testclient import TestClient

from services.trainer.main import create_app
from shared.clients.base import ServiceError
from shared.clients.trainer import TrainerClient
from shared.schemas.trainer import DistillSpec, ScoreSpec
from shared.settings import Settings


def distill_body(teacher, **changes) -> dict:
    """A distill spec as raw JSON: for the bodies a typed spec cannot hold (each test's invalid ones)."""
    body = {
        "kind": "distill",
        "teacher": str(teacher),
        "candidates": {
            "block0.attn": [
                {"kind": "identity"},
                {"kind": "attention", "num_heads": 2, "num_kv_heads": 1, "head_dim": 8},
            ],
            "block0.mlp": [{"kind": "linear"}, {"kind": "mlp", "intermediate_size": 16}],
        },
        "steps": 20,
    }
    return body | changes


def distill(teacher, **changes) -> DistillSpec:
    return DistillSpec.model_validate(distill_body(teacher, **changes))


def test_submit_get_and_list(trainer, teacher_dir):
    job = trainer.submit(distill(teacher_dir))
    assert (job.kind, job.state, job.attempt, job.progress) == ("distill", "queued", 0, 0.0)
    assert job.spec["teacher"] == str(teacher_dir.resolve())  # stored resolved, as the worker reads it
    assert job.spec["loss"] == "nmse" and job.spec["learning_rate"] == 1e-3  # defaults filled in
    DistillSpec.model_validate(job.spec)
    assert trainer.job(job.id) == job
    page = trainer.jobs()
    assert page.total == 1 and [j.id for j in page.jobs] == [job.id]
    with pytest.raises(ServiceError) as err:
        trainer.job("nope")
    assert err.value.status == 404


def test_idempotency_key_replays_the_same_request_and_refuses_a_different_one(trainer, teacher_dir):
    r = trainer.http.post("/v1/jobs", json=distill_body(teacher_dir), headers={"Idempotency-Key": "k1"})
    assert r.status_code == 201
    first = r.json()
    again = trainer.http.post("/v1/jobs", json=distill_body(teacher_dir), headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json() == first
    # the typed spec (defaults written out) is the same request as the raw body
    assert trainer.submit(distill(teacher_dir), idempotency_key="k1").id == first["id"]
    other = trainer.http.post(
        "/v1/jobs", json=distill_body(teacher_dir, steps=21), headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 422
    assert other.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    assert trainer.submit(distill(teacher_dir), idempotency_key="k2").id != first["id"]
    assert trainer.jobs().total == 2


BAD = {
    "unknown kind": ({"kind": "train-it"}, "body"),
    "zero steps": ({"steps": 0}, "steps"),
    "negative learning rate": ({"learning_rate": -1e-3}, "learning_rate"),
    "min above max learning rate": ({"min_learning_rate": 1.0}, "min_learning_rate"),
    "unknown operator": ({"candidates": {"block0.mlp": [{"kind": "moe"}]}}, "candidates"),
    "operator in the wrong slot": (
        {"candidates": {"block0.attn": [{"kind": "mlp", "intermediate_size": 8}]}},
        "candidates",
    ),
    "bad slot id": ({"candidates": {"layer0.mlp": [{"kind": "linear"}]}}, "candidates"),
    "no candidates": ({"candidates": {}}, "candidates"),
    "unknown loss": ({"loss": "kl"}, "loss"),
    "unknown field": ({"epochs": 3}, "epochs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_specs_are_422_naming_the_field(sqlite_trainer, sqlite_teacher_dir, case):
    trainer = sqlite_trainer
    changes, field = BAD[case]
    r = trainer.http.post("/v1/jobs", json=distill_body(sqlite_teacher_dir) | changes)
    assert r.status_code == 422, r.text
    assert any(field in d["field"].split(".") for d in r.json()["error"]["details"]), r.text
    assert trainer.jobs().total == 0


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_learning_rate_is_422(sqlite_trainer, sqlite_teacher_dir, value):
    raw = json.dumps(distill_body(sqlite_teacher_dir) | {"learning_rate": "X"}).replace('"X"', value)
    r = sqlite_trainer.http.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "learning_rate" in r.json()["error"]["message"]


def test_paths_outside_the_roots_or_missing_are_422(trainer, teacher_dir, settings, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (settings.input_roots[0] / "empty").mkdir()
    (settings.input_roots[0] / "weights-only").mkdir()
    (settings.input_roots[0] / "weights-only" / "config.json").write_text("{}")
    cases = {
        str(outside): "outside",
        f"{teacher_dir}/../teacher": "'..'",
        str(settings.input_roots[0] / "missing"): "not a directory",
        str(settings.input_roots[0] / "empty"): "config.json",
        str(settings.input_roots[0] / "weights-only"): "safetensors",
    }
    for teacher, message in cases.items():
        r = trainer.http.post("/v1/jobs", json=distill_body(teacher))
        assert r.status_code == 422, teacher
        detail = r.json()["error"]["details"][0]
        assert detail["field"] == "body.teacher" and message in detail["message"], detail
    r = trainer.http.post(
        "/v1/jobs", json=distill_body(teacher_dir, dataset=str(settings.input_roots[0] / "empty"))
    )
    assert r.status_code == 422 and "train.txt, heldout.txt" in r.json()["error"]["message"]
    data = settings.input_roots[0] / "text"
    data.mkdir()
    for name in ("train.txt", "heldout.txt"):
        (data / name).write_text("Some words.\n")
    assert trainer.submit(distill(teacher_dir, dataset=str(data))).spec["dataset"] == str(data.resolve())
    assert trainer.jobs().total == 1


def test_score_needs_a_succeeded_distill_job(trainer, teacher_dir):
    with pytest.raises(ServiceError) as err:
        trainer.submit(ScoreSpec(distill_job="nope"))
    assert err.value.status == 422 and err.value.details[0]["field"] == "body.distill_job"
    queued = trainer.submit(distill(teacher_dir))
    with pytest.raises(ServiceError) as err:
        trainer.submit(ScoreSpec(distill_job=queued.id))
    assert err.value.status == 422 and "queued" in err.value.message


def test_cancel_a_queued_job_at_once(trainer, teacher_dir):
    job = trainer.submit(distill(teacher_dir))
    cancelled = trainer.cancel(job.id)
    assert cancelled.state == "cancelled" and cancelled.cancel_requested and cancelled.finished_at
    assert trainer.cancel(job.id).state == "cancelled"  # cancelling twice is harmless
    with pytest.raises(ServiceError) as err:
        trainer.result(job.id)
    assert err.value.status == 409 and err.value.details == {"state": "cancelled"}
    with pytest.raises(ServiceError) as err:
        trainer.cancel("nope")
    assert err.value.status == 404


def test_list_filters_and_pages(trainer, teacher_dir):
    ids = [trainer.submit(distill(teacher_dir, seed=i)).id for i in range(5)]
    trainer.cancel(ids[1])
    assert [j.id for j in trainer.jobs(state="cancelled").jobs] == [ids[1]]
    queued = trainer.jobs(state="queued", limit=2)
    assert queued.total == 4 and len(queued.jobs) == 2
    rest = trainer.jobs(state="queued", limit=2, offset=2)
    assert {j.id for j in queued.jobs + rest.jobs} == set(ids) - {ids[1]}
    assert trainer.jobs(kind="score").total == 0 and trainer.jobs(kind="distill").total == 5
    assert trainer.http.get("/v1/jobs", params={"state": "sleeping"}).status_code == 422
    assert trainer.http.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_log_and_artifacts_of_a_queued_job(trainer, teacher_dir):
    job = trainer.submit(distill(teacher_dir))
    log = trainer.log(job.id, tail=5)
    assert (log.state, log.progress, log.lines) == ("queued", 0.0, [])
    assert trainer.artifacts(job.id) == []
    for path in ("/v1/jobs/nope/log", "/v1/jobs/nope/artifacts", "/v1/jobs/nope/result"):
        assert trainer.http.get(path).status_code == 404
    assert trainer.http.get(f"/v1/jobs/{job.id}/log", params={"tail": 0}).status_code == 422


def test_mutating_endpoints_need_the_token(settings, teacher_dir):
    secured = Settings(**(settings.model_dump() | {"api_token": "s3cret"}))
    with TestClient(create_app(secured)) as http:
        anonymous = TrainerClient(http)
        with pytest.raises(ServiceError) as err:
            anonymous.submit(distill(teacher_dir))
        assert err.value.status == 401
        job = TrainerClient(http, token="s3cret").submit(distill(teacher_dir))
        del http.headers["Authorization"]
        assert anonymous.job(job.id).id == job.id  # reading needs no token
        assert http.post(f"/v1/jobs/{job.id}/cancel").status_code == 401
