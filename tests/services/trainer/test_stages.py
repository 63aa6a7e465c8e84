"""Stages 3 and 4 end to end on a small trained teacher: K=4 architectures from a real search over a
real score table are ranked by a short finetune, the winner is finetuned and exported; the export
reloads to identical logits, runs in onnxruntime within 1e-4 and generates text; a SIGKILLed rank
job resumes without redoing finished architectures; torchrun on 2 processes follows 1 process.

Every job kind goes through TrainerClient as a typed spec (shared/schemas/trainer.py) and comes back
as its kind's typed result: the trainer's contract, as the pipeline uses it.

One distill and one score job (on SQLite: the stages do not depend on the database backend, the
queue's tests cover both) serve the whole module.
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TypeVar

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import BaseModel

from services.jobs.checkpoint import load_checkpoint
from services.search.service import search
from services.trainer.kinds.export import ONNX_TOLERANCE
from services.trainer.main import create_app
from services.trainer.paths import job_dir
from services.trainer.worker import trainer_worker
from shared.clients.base import ServiceError
from shared.clients.trainer import TrainerClient
from shared.model import Decoder
from shared.schemas.jobs import Job
from shared.schemas.operators import Architecture
from shared.schemas.scores import ScoreTable
from shared.schemas.trainer import (
    RESULTS,
    DirectoryModel,
    DistillResult,
    DistillSpec,
    EvaluateResult,
    EvaluateSpec,
    ExportResult,
    ExportSpec,
    FinetunedModel,
    FinetuneResult,
    FinetuneSpec,
    JobSpec,
    RankResult,
    RankSpec,
    RankWinner,
    ScoreSpec,
    ScratchModel,
    StudentModel,
)
from shared.settings import Settings
from tests.services.trainer.conftest import fast, make_teacher, params_search
from tests.services.trainer.test_distill_job import distill_spec

ROOT = Path(__file__).parents[3]
HANG_GUARD_S = 300  # only against a hang; nothing is timed
QUICK = {"batch_size": 4, "seq_len": 32, "eval_batches": 2}
R = TypeVar("R", bound=BaseModel)


def run_next(settings: Settings) -> None:
    assert trainer_worker(fast(settings)).run_next(threading.Event())


def succeeded(trainer: TrainerClient, job: Job, expected: type[R]) -> R:
    """The job's result, as the client returns it: its kind's result model."""
    done = trainer.job(job.id)
    assert done.state == "succeeded", [line.message for line in trainer.log(job.id).lines]
    result = trainer.result(job.id)
    assert RESULTS[done.kind] is expected and type(result) is expected, (done.kind, type(result))
    return result


@pytest.fixture(scope="module")
def stage(tmp_path_factory, trained_teacher):
    """A trainer on SQLite with a succeeded distill job, its score table and K=4 search solutions."""
    root = tmp_path_factory.mktemp("stages")
    settings = Settings(
        database_url=f"sqlite:///{root}/unast.db",
        artifacts_root=root / "artifacts",
        input_roots=[root / "inputs"],
    )
    teacher_dir = make_teacher(settings, trained_teacher)
    with TestClient(create_app(settings)) as http:
        trainer = TrainerClient(http)
        spec = distill_spec(teacher_dir)
        distill = trainer.submit(spec)
        run_next(settings)
        distilled = succeeded(trainer, distill, DistillResult)
        assert set(distilled.heldout_nmse) == set(spec.candidates or {}) and distilled.world_size == 1
        dataset = DistillSpec.model_validate(distill.spec).dataset  # as the trainer stored it: resolved
        score = trainer.submit(ScoreSpec(distill_job=distill.id, dataset=dataset, **QUICK))
        run_next(settings)
        table = succeeded(trainer, score, ScoreTable)
        assert [s.id for s in table.slots] == list(distilled.operators)
        shape = Decoder.from_pretrained(teacher_dir).shape
        request = params_search(table, shape, k=4)
        solutions = search(request, Settings()).solutions
        assert len(solutions) == 4
        yield {
            "settings": settings,
            "trainer": trainer,
            "distill": distill,
            "score": score,
            "dataset": dataset,
            "solutions": solutions,
        }


def rank_spec(stage: dict, **changes) -> RankSpec:
    fields = {
        "distill_job": stage["distill"].id,
        "dataset": stage["dataset"],
        "architectures": stage["solutions"],  # the search's Solution objects, unchanged
        "steps": 8,
        **QUICK,
    }
    return RankSpec(**(fields | changes))


def test_k_architectures_are_ranked_finetuned_exported_and_generate(stage, tmp_path):
    settings, trainer, solutions = stage["settings"], stage["trainer"], stage["solutions"]
    rank = trainer.submit(rank_spec(stage))
    run_next(settings)
    ranked = succeeded(trainer, rank, RankResult)
    assert sorted(r.search_rank for r in ranked.ranking) == [1, 2, 3, 4]
    afters = [r.loss_after for r in ranked.ranking]
    assert afters == sorted(afters) and ranked.winner == ranked.ranking[0].architecture
    assert all(r.loss_after < r.loss_before for r in ranked.ranking)  # the finetune helps each
    assert -1 <= ranked.spearman <= 1 and 1 <= ranked.search_top_rank <= 4
    assert ranked.winner.choices == solutions[ranked.winner_search_rank - 1].choices

    finetune = trainer.submit(
        FinetuneSpec(
            model=RankWinner(rank_job=rank.id),
            dataset=stage["dataset"],
            steps=12,
            eval_every=5,
            checkpoint_every=5,
            **QUICK,
        )
    )
    run_next(settings)
    tuned = succeeded(trainer, finetune, FinetuneResult)
    assert [p.step for p in tuned.curve] == [0, 5, 10, 12]
    assert tuned.curve[-1].loss < tuned.curve[0].loss
    assert tuned.lineage == {"rank_job": rank.id, "distill_job": stage["distill"].id}
    assert tuned.architecture == ranked.winner

    export = trainer.submit(ExportSpec(model=FinetunedModel(finetune_job=finetune.id)))
    run_next(settings)
    exported = succeeded(trainer, export, ExportResult)
    directory = Path(exported.directory)
    assert exported.reload_identical and exported.onnx_max_abs_diff < ONNX_TOLERANCE
    assert exported.onnx_generate_equal  # onnxruntime generates with its KV cache as we do
    for name in ("config.json", "model.safetensors", "tokenizer.json", "provenance.json", "model.onnx"):
        assert f"export/{name}" in exported.files
    config = json.loads((directory / "config.json").read_text())
    assert Architecture.model_validate(config["unast_architecture"]) == ranked.winner
    assert len(config["unast_blocks"]) == 2
    provenance = json.loads((directory / "provenance.json").read_text())
    assert provenance["jobs"] == {**tuned.lineage, "finetune_job": finetune.id, "export_job": export.id}

    # our loader, independently of the job's own check: bit-identical to the finetune's model
    probe = torch.randint(0, 384, (2, 17))
    with torch.no_grad():
        assert torch.equal(
            Decoder.from_pretrained(directory)(probe), Decoder.from_pretrained(tuned.model_dir)(probe)
        )
    # the file endpoint hands out what the job wrote, and nothing outside its folder
    trainer.download(export.id, "export/config.json", tmp_path / "fetched" / "config.json")
    assert json.loads((tmp_path / "fetched" / "config.json").read_text()) == config
    assert trainer.http.get(f"/v1/jobs/{export.id}/files/../../unast.db").status_code in (404, 422)
    os.mkfifo(directory / "pipe")  # not a file to hand out; and names too long for the file system
    for path in ("export/pipe", "x" * 256, "export/" + "y" * 300):
        assert trainer.http.get(f"/v1/jobs/{export.id}/files/{path}").status_code == 404, path[:20]
    with pytest.raises(ServiceError) as err:
        trainer.download(export.id, "export/nothing.bin", tmp_path / "fetched" / "nothing.bin")
    assert err.value.status == 404 and not (tmp_path / "fetched" / "nothing.bin").exists()

    # the same held-out figure from the evaluate job as from the finetune's last evaluation
    evaluate = trainer.submit(
        EvaluateSpec(model=DirectoryModel(path=str(directory)), dataset=stage["dataset"], **QUICK)
    )
    run_next(settings)
    evaluated = succeeded(trainer, evaluate, EvaluateResult)
    assert evaluated.loss == pytest.approx(tuned.loss, rel=1e-6) and evaluated.tokens == 2 * 4 * 32
    assert evaluated.architecture == ranked.winner and evaluated.params == tuned.params

    # every kind of the contract went through the typed client above
    jobs = [stage["distill"], stage["score"], rank, finetune, export, evaluate]
    assert {job.kind for job in jobs} == set(RESULTS)

    text = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "generate",
            str(directory),
            "--prompt",
            "KING:",
            "--tokens",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        cwd=ROOT,
    )
    assert text.returncode == 0, text.stderr[-2000:]
    assert text.stdout.startswith("KING:") and len(text.stdout.strip()) > len("KING:")


def test_bad_rank_and_finetune_specs_are_422s_naming_the_field(stage):
    trainer = stage["trainer"]
    first = stage["solutions"][0].model_dump(mode="json")

    def refused(spec: JobSpec | dict) -> ServiceError:
        """A typed spec the trainer's checks refuse, or a raw body no typed spec can hold."""
        with pytest.raises(ServiceError) as err:
            if isinstance(spec, BaseModel):
                trainer.submit(spec)
            else:
                trainer.http.headers["content-type"] = "application/json"
                trainer.request("POST", "/v1/jobs", content=json.dumps(spec, allow_nan=True))
        assert err.value.status == 422, err.value
        return err.value

    def named(error: ServiceError, *parts: str) -> bool:
        return any(all(p in d["field"] + " " + d["message"] for p in parts) for d in error.details)

    def raw_rank(**changes) -> dict:
        return rank_spec(stage).model_dump(mode="json") | changes

    unknown = {**first, "choices": {**first["choices"], "block0.attn": "attn_h1_kv1_d8"}}
    assert named(refused(raw_rank(architectures=[unknown])), "architectures.0.choices.block0.attn")
    missing = {"choices": {k: v for k, v in first["choices"].items() if k != "block0.mlp"}}
    assert named(refused(raw_rank(architectures=[missing])), "architectures.0.choices", "block0.mlp")
    short = {"choices": {k: v for k, v in first["choices"].items() if k.startswith("block0")}}
    assert named(refused(raw_rank(architectures=[short])), "architectures.0.choices.block1.attn")
    extra = {"choices": {**first["choices"], "block2.attn": "identity", "block2.mlp": "identity"}}
    assert named(refused(raw_rank(architectures=[extra])), "architectures.0.choices.block2.attn")
    assert named(refused(raw_rank(learning_rate=float("nan"))), "learning_rate")
    teacher = Path(DistillSpec.model_validate(stage["distill"].spec).teacher)
    queued = trainer.submit(distill_spec(teacher, steps=1, warmup=0))
    assert named(refused(rank_spec(stage, distill_job=queued.id)), "distill_job", "queued")
    student = StudentModel(distill_job=queued.id, architecture=stage["solutions"][0])
    assert named(refused(FinetuneSpec(model=student, steps=2)), "model.distill_job")
    trainer.cancel(queued.id)
    # the search's solutions as JSON, rank, objective and costs included, are architectures as they are
    accepted = trainer.request("POST", "/v1/jobs", json=raw_rank(architectures=[first]))
    assert accepted["spec"]["architectures"] == [{"choices": first["choices"]}]
    trainer.cancel(accepted["id"])


def test_an_architecture_trains_from_scratch(stage):
    """The report's from-scratch baseline: the search's architecture at the teacher's shape, every
    weight drawn from the job's seed (none of the teacher's, none distilled), trained by lm loss."""
    settings, trainer, solution = stage["settings"], stage["trainer"], stage["solutions"][0]
    teacher = Path(DistillSpec.model_validate(stage["distill"].spec).teacher)
    spec = FinetuneSpec(
        model=ScratchModel(teacher=str(teacher), architecture=solution),
        dataset=stage["dataset"],
        steps=40,
        eval_every=20,
        loss="lm",
        learning_rate=3e-3,
        warmup=4,
        **QUICK,
    )
    first = trainer.submit(spec)
    run_next(settings)
    trained = succeeded(trainer, first, FinetuneResult)
    assert trained.architecture.choices == solution.choices and trained.lineage == {"scratch": str(teacher)}
    assert trained.teacher == str(teacher) and trained.tokens_trained == 40 * 4 * 32
    # random weights: about as uncertain as the vocabulary is large, then learning
    assert trained.curve[0].perplexity > 384 / 2 and trained.perplexity < trained.curve[0].perplexity / 2
    # the student of the same architecture starts from what distillation learned: far lower
    student = StudentModel(distill_job=stage["distill"].id, architecture=solution)
    tuned = trainer.submit(spec.model_copy(update={"model": student, "steps": 1, "warmup": 0}))
    run_next(settings)
    assert succeeded(trainer, tuned, FinetuneResult).curve[0].perplexity < trained.curve[0].perplexity / 4
    # drawn from the seed: another seed starts elsewhere, the same seed where it started
    reseeded = trainer.submit(spec.model_copy(update={"seed": spec.seed + 1, "steps": 1, "warmup": 0}))
    again = trainer.submit(spec.model_copy(update={"steps": 1, "warmup": 0}))
    run_next(settings)
    run_next(settings)
    assert succeeded(trainer, again, FinetuneResult).curve[0].loss == trained.curve[0].loss
    assert succeeded(trainer, reseeded, FinetuneResult).curve[0].loss != trained.curve[0].loss

    def refusal(model: dict, kind: str = "finetune") -> list[str]:
        body = {"kind": kind, "model": model, "dataset": stage["dataset"]} | (
            {"steps": 2} if kind == "finetune" else {}
        )
        with pytest.raises(ServiceError) as err:
            trainer.request("POST", "/v1/jobs", json=body)
        assert err.value.status == 422, err.value
        return [d["field"] for d in err.value.details]

    scratch = spec.model.model_dump(mode="json")
    short = {"choices": {k: v for k, v in solution.choices.items() if k.startswith("block0")}}
    assert refusal({**scratch, "architecture": short}) == ["body.model.architecture.choices.block1.attn"]
    assert refusal({**scratch, "teacher": "/etc"}) == ["body.model.teacher"]
    assert refusal(scratch, kind="evaluate") == ["body.model.source"]  # random weights: nothing to evaluate


def worker_process(settings: Settings) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | fast(settings).to_env()
    return subprocess.Popen([sys.executable, "-m", "services.trainer.cli", "worker"], env=env, cwd=ROOT)


def wait_until(predicate, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_sigkilled_rank_job_resumes_without_redoing_finished_architectures(stage):
    settings, trainer = fast(stage["settings"], trainer_stale_s=3.0), stage["trainer"]
    rank = trainer.submit(rank_spec(stage, steps=30, seed=1))
    checkpoint = job_dir(settings, rank.id) / "checkpoint"
    first = worker_process(settings)
    try:
        wait_until(lambda: (c := load_checkpoint(checkpoint)) is not None and c.step >= 1, "one architecture")
        done_before = load_checkpoint(checkpoint).state["losses"]
        first.kill()  # SIGKILL: no clean-up of any kind
        first.wait()
        second = worker_process(settings)
        try:
            wait_until(lambda: trainer.job(rank.id).state in ("succeeded", "failed"), "the resumed rank job")
        finally:
            second.terminate()
            second.wait(HANG_GUARD_S)
    finally:
        if first.poll() is None:
            first.kill()
    result = succeeded(trainer, rank, RankResult)
    assert trainer.job(rank.id).attempt == 2
    lines = [line.message for line in trainer.log(rank.id, tail=1000).lines]
    for index in done_before:  # each finished architecture was trained once, before the kill
        assert sum(line.startswith(f"architecture {int(index) + 1}/4:") for line in lines) == 1
    by_search_rank = {r.search_rank: r for r in result.ranking}
    for index, (before, after) in done_before.items():
        assert by_search_rank[int(index) + 1].loss_after == after
        assert by_search_rank[int(index) + 1].loss_before == before


def torchrun(spec: JobSpec, out: Path, nproc: int, settings: Settings) -> BaseModel:
    """`unast-trainer run` on a typed spec: its kind's typed result, from result.json."""
    (out.parent / f"{out.name}.json").write_text(spec.model_dump_json())
    command = [shutil.which("torchrun", path=os.path.dirname(sys.executable)), "--standalone"]
    command += ["--nproc_per_node", str(nproc), "-m", "services.trainer.cli", "run"]
    command += ["--spec", str(out.parent / f"{out.name}.json"), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNAST_")} | settings.to_env()
    done = subprocess.run(
        command, env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return RESULTS[spec.kind].model_validate_json((out / "result.json").read_text())


@pytest.mark.slow
def test_two_processes_rank_and_finetune_as_one_does(stage, tmp_path):
    settings = stage["settings"]
    architectures = stage["solutions"][:3]  # 3 on 2 ranks: one rank has a round without work
    ranking = rank_spec(stage, architectures=architectures, steps=6)
    one, two = (torchrun(ranking, tmp_path / f"rank{n}", n, settings) for n in (1, 2))
    assert isinstance(one, RankResult) and isinstance(two, RankResult)
    assert two.world_size == 2 and one.world_size == 1
    for a, b in zip(one.ranking, two.ranking, strict=True):
        assert a.search_rank == b.search_rank
        assert b.loss_after == pytest.approx(a.loss_after, rel=1e-5)

    finetuning = FinetuneSpec(
        model=StudentModel(distill_job=stage["distill"].id, architecture=architectures[0]),
        dataset=stage["dataset"],
        steps=10,
        eval_every=5,
        loss="mix",
        **QUICK,
    )
    one, two = (torchrun(finetuning, tmp_path / f"finetune{n}", n, settings) for n in (1, 2))
    assert isinstance(one, FinetuneResult) and isinstance(two, FinetuneResult)
    assert two.world_size == 2
    for a, b in zip(one.curve, two.curve, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-4)
