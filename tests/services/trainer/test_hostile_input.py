"""Submissions and reads an attacker or a careless client would try, each a 4xx naming what is wrong,
never a 500, on SQLite and PostgreSQL: numbers beyond the database's integers, NUL characters, files
inside the roots that link out of them, jobs far too large for the device, loose JSON types."""

import json
import os
import shutil

import pytest

from services.trainer.memory import device_memory_bytes
from services.trainer.models import QUEUE
from tests.services.trainer.test_jobs_api import distill, distill_body


def field_of(response) -> str:
    return response.json()["error"]["details"][0]["field"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/jobs?offset=9223372036854775808", "query.offset"),
        ("/v1/jobs?offset=2147483648", "query.offset"),
        ("/v1/jobs?limit=9223372036854775808", "query.limit"),
        ("/v1/jobs/x/log?tail=9223372036854775808", "query.tail"),
    ],
)
def test_integers_beyond_the_database_are_422(trainer, path, field):
    r = trainer.http.get(path)
    assert r.status_code == 422, r.text
    assert field_of(r) == field


def test_paging_bounds_show_in_the_openapi(sqlite_trainer):
    params = sqlite_trainer.http.get("/openapi.json").json()["paths"]["/v1/jobs"]["get"]["parameters"]
    offset = next(p for p in params if p["name"] == "offset")["schema"]
    assert offset["minimum"] == 0 and offset["maximum"] <= 2**31 - 1


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/jobs/%00", "path.job_id"),
        ("GET", "/v1/jobs/a%00b/log", "path.job_id"),
        ("POST", "/v1/jobs/a%00b/cancel", "path.job_id"),
        ("GET", "/v1/jobs?kind=%00", "query.kind"),
    ],
)
def test_nul_in_paths_and_queries_is_422(trainer, method, path, field):
    r = trainer.http.request(method, path)
    assert r.status_code == 422, r.text
    assert field_of(r) == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "score", "distill_job": "a\u0000b"}, "body.distill_job"),
        (
            {"kind": "evaluate", "model": {"source": "finetune", "finetune_job": "\u0000"}},
            "body.model.finetune_job",
        ),
    ],
)
def test_nul_in_specs_is_422(trainer, body, field):
    r = trainer.http.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert field_of(r) == field


def test_nul_in_a_path_field_is_422(trainer, teacher_dir):
    r = trainer.http.post("/v1/jobs", json=distill_body(f"{teacher_dir}\u0000x"))
    assert r.status_code == 422 and field_of(r) == "body.teacher"


@pytest.mark.parametrize(
    ("change", "field"), [({"steps": "10"}, "body.distill.steps"), ({"seed": True}, "body.distill.seed")]
)
def test_strings_and_booleans_are_not_numbers(sqlite_trainer, sqlite_teacher_dir, change, field):
    r = sqlite_trainer.http.post("/v1/jobs", json=distill_body(sqlite_teacher_dir, **change))
    assert r.status_code == 422 and field_of(r) == field


def test_a_job_too_large_for_the_device_is_refused(sqlite_trainer, sqlite_teacher_dir):
    r = sqlite_trainer.http.post(
        "/v1/jobs", json=distill_body(sqlite_teacher_dir, seq_len=131072, batch_size=4096)
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert [d["field"] for d in error["details"]] == ["body.batch_size", "body.seq_len"]
    assert "GiB" in error["message"] and "cpu" in error["message"]
    assert sqlite_trainer.jobs().total == 0
    assert sqlite_trainer.submit(distill(sqlite_teacher_dir, seq_len=256, batch_size=8)).state == "queued"


def test_score_jobs_are_estimated_from_their_distill_jobs_teacher(trainer, teacher_dir, sessions):
    queued = trainer.submit(distill(teacher_dir))
    with sessions() as session:  # pretend it ran: the score check wants a succeeded distill job
        job = QUEUE.get(session, job_id=queued.id)
        job.state, job.result = "succeeded", {"operators": {}}
        session.commit()
    r = trainer.http.post(
        "/v1/jobs", json={"kind": "score", "distill_job": queued.id, "seq_len": 131072, "batch_size": 4096}
    )
    assert r.status_code == 422 and field_of(r) == "body.batch_size", r.text


def test_the_device_memory_is_known_on_cpu():
    assert device_memory_bytes("cpu") > 2**20


# -- symlinks: every file a job opens must lie inside the roots -----------------------------------


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
def test_a_teacher_file_that_links_out_of_the_roots_is_refused(
    sqlite_trainer, sqlite_teacher_dir, tmp_path, name
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (sqlite_teacher_dir / name).rename(outside / name)
    os.symlink(outside / name, sqlite_teacher_dir / name)
    r = sqlite_trainer.http.post("/v1/jobs", json=distill_body(sqlite_teacher_dir))
    assert r.status_code == 422, r.text
    assert field_of(r) == "body.teacher" and "outside" in r.json()["error"]["message"]


def test_a_dataset_file_linked_to_etc_passwd_is_refused(sqlite_trainer, sqlite_teacher_dir, sqlite_settings):
    data = sqlite_settings.input_roots[0] / "sneaky"
    data.mkdir()
    (data / "heldout.txt").write_text("Some words.\n")
    os.symlink("/etc/passwd", data / "train.txt")
    r = sqlite_trainer.http.post("/v1/jobs", json=distill_body(sqlite_teacher_dir, dataset=str(data)))
    assert r.status_code == 422, r.text
    assert field_of(r) == "body.dataset" and "outside" in r.json()["error"]["message"]


def test_links_that_stay_inside_the_roots_are_followed(sqlite_trainer, sqlite_teacher_dir, sqlite_settings):
    shared_weights = sqlite_settings.input_roots[0] / "weights"
    shared_weights.mkdir()
    (sqlite_teacher_dir / "model.safetensors").rename(shared_weights / "model.safetensors")
    os.symlink(shared_weights / "model.safetensors", sqlite_teacher_dir / "model.safetensors")
    assert sqlite_trainer.submit(distill(sqlite_teacher_dir)).state == "queued"


def test_an_export_naming_a_teacher_outside_the_roots_is_refused(
    sqlite_trainer, sqlite_teacher_dir, tmp_path
):
    """A model directory's provenance.json names the teacher the job loads beside it: inside the roots."""
    outside = tmp_path / "outside-teacher"
    shutil.copytree(sqlite_teacher_dir, outside)
    (sqlite_teacher_dir / "provenance.json").write_text(json.dumps({"teacher": str(outside)}))
    body = {"kind": "evaluate", "model": {"source": "directory", "path": str(sqlite_teacher_dir)}}
    r = sqlite_trainer.http.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert field_of(r) == "body.model.path" and "outside" in r.json()["error"]["message"]


# -- FIFOs: no open may block a worker --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("model.safetensors", "is not a regular file"),
        ("config.json", "has no config.json"),
        ("tokenizer.json", "has no tokenizer.json"),
    ],
)
def test_a_fifo_in_a_teacher_folder_is_refused_at_submission(sqlite_trainer, sqlite_teacher_dir, name, why):
    """A FIFO beside a valid config and tokenizer: opening it would wait for a writer forever, and the
    worker's heartbeat with it. Refused before the job exists (the request itself must not block)."""
    (sqlite_teacher_dir / name).unlink()
    os.mkfifo(sqlite_teacher_dir / name)
    evaluate = {"kind": "evaluate", "model": {"source": "directory", "path": str(sqlite_teacher_dir)}}
    for body, field in ((distill_body(sqlite_teacher_dir), "body.teacher"), (evaluate, "body.model.path")):
        r = sqlite_trainer.http.post("/v1/jobs", json=body)
        assert r.status_code == 422, r.text
        assert field_of(r) == field and why in r.json()["error"]["message"], r.text
    assert sqlite_trainer.jobs().total == 0


def test_a_fifo_swapped_in_after_submission_fails_the_load_instead_of_blocking(sqlite_teacher_dir, tmp_path):
    """At open: the loader checks the file it opens (without blocking), so a FIFO put in place after the
    job was accepted fails the job with a clear error; a thread guards against a hang."""
    import threading

    from shared.model import Decoder

    (sqlite_teacher_dir / "model.safetensors").unlink()
    os.mkfifo(sqlite_teacher_dir / "model.safetensors")
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            Decoder.from_pretrained(sqlite_teacher_dir)
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(60)  # only against a hang
    assert outcome and isinstance(outcome[0], ValueError) and "not a regular file" in str(outcome[0])
