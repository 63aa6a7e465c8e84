"""Distillation and score jobs end to end on a small trained teacher: submitted over the API, run by
a worker, resumed after SIGKILL with the same result as an uninterrupted run."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from services.trainer.paths import job_dir
from services.trainer.worker import trainer_worker
from shared.candidates import candidates as default_candidates
from shared.clients.base import ServiceError
from shared.clients.trainer import TrainerClient
from shared.schemas.operators import (
    AttentionOp,
    IdentityOp,
    LinearOp,
    MLPOp,
    OperatorSpec,
    teacher_operator,
)
from shared.schemas.scores import ScoreTable
from shared.schemas.trainer import DistillResult, DistillSpec, ScoreSpec
from shared.settings import Settings
from tests.services.trainer.conftest import TEST_TEACHER, fast

HANG_GUARD_S = 240  # only against a hang; nothing is timed


def candidate_specs() -> dict[str, list[OperatorSpec]]:
    attention = [
        teacher_operator(TEST_TEACHER, "attention"),
        IdentityOp(),
        LinearOp(),
        AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8),
    ]
    mlp = [teacher_operator(TEST_TEACHER, "mlp"), IdentityOp(), LinearOp(), MLPOp(intermediate_size=48)]
    return {
        f"block{i}.{kind}": attention if kind == "attn" else mlp
        for i in range(TEST_TEACHER.num_layers)
        for kind in ("attn", "mlp")
    }


def distill_spec(teacher_dir, **changes) -> DistillSpec:
    fields = {
        "teacher": str(teacher_dir),
        "dataset": str(teacher_dir.parent / "dataset"),
        "candidates": candidate_specs(),
        "steps": 30,
        "batch_size": 4,
        "seq_len": 64,
        "learning_rate": 1e-3,
        "min_learning_rate": 1e-4,
        "warmup": 5,
        "checkpoint_every": 10,
        "eval_batches": 4,
    }
    return DistillSpec(**(fields | changes))


def distilled(trainer: TrainerClient, job_id: str) -> DistillResult:
    result = trainer.result(job_id)
    assert isinstance(result, DistillResult)
    return result


def run_next(settings: Settings) -> bool:
    return trainer_worker(fast(settings)).run_next(threading.Event())


def test_distill_then_score(settings, trainer, teacher_dir):
    distill = trainer.submit(distill_spec(teacher_dir))
    assert run_next(settings)
    done = trainer.job(distill.id)
    assert done.state == "succeeded", trainer.log(distill.id).lines
    nmse = distilled(trainer, distill.id).heldout_nmse
    assert set(nmse) == {"block0.attn", "block0.mlp", "block1.attn", "block1.mlp"}
    for slot, by_candidate in nmse.items():
        teacher_id = "attn_h4_kv2_d16" if slot.endswith("attn") else "mlp_i176"
        assert by_candidate[teacher_id] == 0.0
        assert by_candidate["identity"] == pytest.approx(1.0)
        smaller = "attn_h2_kv1_d8" if slot.endswith("attn") else "mlp_i48"
        assert 0.0 < by_candidate[smaller] < 1.0  # it learned something of its teacher
    assert [a.name for a in trainer.artifacts(distill.id)] == ["candidates"]
    assert done.progress == 1.0 and done.message == "succeeded"

    score = trainer.submit(
        ScoreSpec(
            distill_job=distill.id,
            dataset=DistillSpec.model_validate(distill.spec).dataset,
            batch_size=4,
            seq_len=64,
            eval_batches=3,
            checkpoint_every=1,
        )
    )
    assert run_next(settings)
    scored = trainer.result(score.id)
    assert isinstance(scored, ScoreTable)
    assert scored.teacher_loss > 0 and scored.tokens == 3 * 4 * 64 and scored.batches == 3
    assert -1 <= scored.rank_stability <= 1
    slots = {s.id: {c.id: c for c in s.candidates} for s in scored.slots}
    for by_id in slots.values():
        references = [c for c in by_id.values() if c.reference]
        assert len(references) == 1 and references[0].score == 0.0
        assert by_id["identity"].score > 0  # skipping a sublayer of a trained model costs loss
        assert by_id["identity"].operator == IdentityOp()
        assert by_id["identity"].stderr > 0 and references[0].stderr == 0.0
    # the search request's shape: every slot lists its candidates with a score
    assert set(slots) == set(nmse)


def test_default_candidates_fill_every_slot(sqlite_settings, sqlite_trainer, sqlite_teacher_dir):
    spec = distill_spec(
        sqlite_teacher_dir, candidates=None, steps=2, warmup=0, checkpoint_every=5, eval_batches=1
    )
    job = sqlite_trainer.submit(spec)
    assert run_next(sqlite_settings)
    operators = distilled(sqlite_trainer, job.id).operators
    assert len(operators) == 2 * TEST_TEACHER.num_layers
    assert len(operators["block1.mlp"]) == len(default_candidates(TEST_TEACHER, "mlp"))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"candidates": {"block7.attn": [{"kind": "linear"}]}}, "candidates.block7.attn"),
        ({"candidates": {"block0.attn": [{"kind": "mlp", "intermediate_size": 8}]}}, "candidates"),
        ({"candidates": {"block0.attn": [{"kind": "conv"}]}}, "candidates"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"teacher": "/etc"}, "teacher"),
    ],
)
def test_bad_specs_are_422s_naming_the_field(sqlite_trainer, sqlite_teacher_dir, change, field):
    body = distill_spec(sqlite_teacher_dir).model_dump(mode="json") | change  # sent raw: it is invalid
    with pytest.raises(ServiceError) as err:
        sqlite_trainer.http.headers["content-type"] = "application/json"
        sqlite_trainer.request("POST", "/v1/jobs", content=json.dumps(body, allow_nan=True))
    assert err.value.status == 422
    # pydantic puts the job kind in the path of its own checks (body.distill.learning_rate)
    assert any(
        d["field"].startswith(("body.", "body.distill.")) and f".{field}" in d["field"]
        for d in err.value.details
    )
    assert sqlite_trainer.jobs().total == 0


def test_a_teacher_without_a_tokenizer_is_refused(sqlite_trainer, sqlite_teacher_dir):
    (sqlite_teacher_dir / "tokenizer.json").unlink()
    with pytest.raises(ServiceError) as err:
        sqlite_trainer.submit(distill_spec(sqlite_teacher_dir))
    assert err.value.status == 422 and "tokenizer.json" in err.value.message


def worker_process(settings: Settings) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | settings.to_env()
    return subprocess.Popen([sys.executable, "-m", "services.trainer.cli", "worker"], env=env)


def stop_worker(worker: subprocess.Popen) -> None:
    """SIGTERM, as an operator stops a worker: it exits, cleanly. One that does not is killed (it would
    hold the test run's output open) and the test fails."""
    worker.terminate()
    try:
        assert worker.wait(HANG_GUARD_S) == 0, "the worker's exit on SIGTERM"
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        pytest.fail(f"the worker did not stop within {HANG_GUARD_S} s of SIGTERM")


@pytest.mark.slow
def test_a_sigkilled_distillation_resumes_to_the_uninterrupted_result(settings, trainer, teacher_dir):
    settings = fast(settings, trainer_stale_s=3.0)
    spec = distill_spec(teacher_dir, steps=80, checkpoint_every=10)
    killed_job = trainer.submit(spec)
    pointer = job_dir(settings, killed_job.id) / "checkpoint" / "checkpoint.json"
    first = worker_process(settings)
    deadline = time.monotonic() + HANG_GUARD_S
    try:
        while not (pointer.exists() and json.loads(pointer.read_text())["step"] >= 20):
            assert first.poll() is None and time.monotonic() < deadline, "no step-20 checkpoint"
            time.sleep(0.05)
        first.kill()  # SIGKILL: no clean-up of any kind
        first.wait()
        # its process is gone on this machine: a reader takes the job back at once, as a worker would
        assert trainer.job(killed_job.id).state == "queued"
        second = worker_process(settings)
        try:
            while trainer.job(killed_job.id).state != "succeeded":
                assert time.monotonic() < deadline and second.poll() is None, trainer.log(killed_job.id).lines
                time.sleep(0.1)
        finally:
            stop_worker(second)
    finally:
        if first.poll() is None:
            first.kill()
    resumed = trainer.job(killed_job.id)
    assert resumed.attempt == 2
    assert any(
        line.message.startswith("resuming from") for line in trainer.log(killed_job.id, tail=500).lines
    )

    reference = trainer.submit(spec)  # the same spec, run through without interruption
    assert run_next(settings)
    expected = distilled(trainer, reference.id).heldout_nmse
    got = distilled(trainer, killed_job.id).heldout_nmse
    for slot in expected:
        for cid in expected[slot]:
            assert got[slot][cid] == pytest.approx(expected[slot][cid], rel=1e-5, abs=1e-7), (slot, cid)
