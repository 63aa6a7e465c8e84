"""Each family people compress, end to end at tiny size: a random checkpoint that transformers writes
(tests/hf_families.py) goes through distill (the default pool: every candidate inherits and trains) ->
score -> search -> rank (K=2) -> finetune -> export, and the export reloads with identical logits and
runs in onnxruntime. The REST APIs refuse an unsupported teacher with a 422 naming the field."""

import shutil
import threading

import pytest
import torch
from fastapi.testclient import TestClient

from services.search.service import search
from services.trainer.kinds.export import ONNX_TOLERANCE
from services.trainer.main import create_app
from services.trainer.worker import trainer_worker
from shared.candidates import slot_pools
from shared.clients.base import ServiceError
from shared.clients.trainer import TrainerClient
from shared.model import Decoder
from shared.schemas.operators import AttentionOp, IdentityOp
from shared.schemas.scores import ScoreTable
from shared.schemas.trainer import (
    DirectoryModel,
    DistillResult,
    DistillSpec,
    EvaluateSpec,
    ExportResult,
    ExportSpec,
    FinetunedModel,
    FinetuneResult,
    FinetuneSpec,
    RankResult,
    RankSpec,
    RankWinner,
    ScoreSpec,
)
from shared.settings import Settings
from tests.hf_families import TEACHERS, hf_config, teacher_checkpoint
from tests.services.trainer.conftest import TEST_TEACHER, fast, params_search

pytest.importorskip("transformers")
QUICK = {"batch_size": 2, "seq_len": 24, "eval_batches": 2}


def run_next(settings: Settings) -> None:
    assert trainer_worker(fast(settings)).run_next(threading.Event())


def succeeded(trainer: TrainerClient, job, expected):
    done = trainer.job(job.id)
    assert done.state == "succeeded", [line.message for line in trainer.log(job.id).lines]
    result = trainer.result(job.id)
    assert isinstance(result, expected)
    return result


@pytest.fixture
def trainer_on(tmp_path, trained_teacher):
    """A trainer on SQLite whose input root holds the test corpus and tokenizer, and a function that
    writes a family's random checkpoint there (with that tokenizer)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/unast.db",
        artifacts_root=tmp_path / "artifacts",
        input_roots=[tmp_path / "inputs"],
    )
    inputs = tmp_path / "inputs"
    shutil.copytree(trained_teacher / "dataset", inputs / "dataset")

    def teacher(name: str):
        directory = inputs / name
        teacher_checkpoint(directory, name, vocab_size=TEST_TEACHER.vocab_size)
        for file in (trained_teacher / "teacher").glob("tokenizer*"):
            shutil.copy(file, directory)
        return directory

    with TestClient(create_app(settings)) as http:
        yield settings, TrainerClient(http), teacher


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TEACHERS))
def test_each_family_compresses_end_to_end_and_its_export_reloads(trainer_on, name):
    settings, trainer, teacher = trainer_on
    directory = teacher(name)
    shape = Decoder.from_pretrained(directory).shape
    pools = slot_pools(shape, "default")
    distill = trainer.submit(
        DistillSpec(
            teacher=str(directory),
            dataset=str(directory.parent / "dataset"),
            candidates=pools,
            steps=3,
            warmup=1,
            checkpoint_every=3,
            **QUICK,
        )
    )
    run_next(settings)
    distilled = succeeded(trainer, distill, DistillResult)
    assert all(len(distilled.heldout_nmse[slot]) == len(pools[slot]) for slot in pools)
    dataset = str(directory.parent / "dataset")
    score = trainer.submit(ScoreSpec(distill_job=distill.id, dataset=dataset, **QUICK))
    run_next(settings)
    table = succeeded(trainer, score, ScoreTable)
    request = params_search(table, shape, k=2)
    solutions = search(request, Settings()).solutions
    assert len(solutions) == 2
    rank = trainer.submit(
        RankSpec(distill_job=distill.id, dataset=dataset, architectures=solutions, steps=2, **QUICK)
    )
    run_next(settings)
    ranked = succeeded(trainer, rank, RankResult)
    finetune = trainer.submit(
        FinetuneSpec(
            model=RankWinner(rank_job=rank.id),
            dataset=dataset,
            steps=2,
            eval_every=2,
            checkpoint_every=2,
            **QUICK,
        )
    )
    run_next(settings)
    tuned = succeeded(trainer, finetune, FinetuneResult)
    assert tuned.architecture == ranked.winner
    export = trainer.submit(ExportSpec(model=FinetunedModel(finetune_job=finetune.id)))
    run_next(settings)
    exported = succeeded(trainer, export, ExportResult)
    assert exported.reload_identical and exported.onnx_max_abs_diff < ONNX_TOLERANCE
    assert exported.onnx_generate_equal  # onnxruntime generates with its KV cache as we do
    reloaded = Decoder.from_pretrained(exported.directory)
    assert reloaded.shape.family == shape.family and reloaded.architecture == ranked.winner
    probe = torch.randint(0, shape.vocab_size, (2, 30))  # past Mistral's window of 8
    with torch.no_grad():
        assert torch.equal(reloaded(probe), Decoder.from_pretrained(tuned.model_dir)(probe))


@pytest.mark.parametrize(
    ("field", "model_type", "fields"),
    [
        ("hidden_act", "llama", {"hidden_act": "gelu"}),
        ("model_type", "phi3", {}),
        ("use_sliding_window", "qwen2", {"use_sliding_window": True, "sliding_window": 8}),
    ],
)
def test_the_trainer_refuses_an_unsupported_teacher_naming_the_field(trainer_on, field, model_type, fields):
    _, trainer, teacher = trainer_on
    directory = teacher("qwen2")
    config = hf_config(model_type, num_attention_heads=4, num_key_value_heads=2, **fields)
    config.vocab_size = TEST_TEACHER.vocab_size
    (directory / "config.json").write_text(config.to_json_string())
    with pytest.raises(ServiceError) as refused:
        trainer.submit(
            EvaluateSpec(
                model=DirectoryModel(path=str(directory)), dataset=str(directory.parent / "dataset"), **QUICK
            )
        )
    assert refused.value.status == 422
    assert f"{field}:" in str(refused.value) and "\n" not in str(refused.value)


def test_a_candidate_that_cannot_merge_whole_kv_groups_is_refused(trainer_on):
    # a 10-head / 5-KV-head teacher: 2 KV heads would merge its 5 unevenly
    _, trainer, teacher = trainer_on
    directory = teacher("llama-10-5")
    uneven = AttentionOp(num_heads=4, num_kv_heads=2, head_dim=8)
    with pytest.raises(ServiceError) as refused:
        trainer.submit(
            DistillSpec(
                teacher=str(directory),
                dataset=str(directory.parent / "dataset"),
                candidates={"block0.attn": [IdentityOp(), uneven]},
                steps=1,
                **QUICK,
            )
        )
    assert refused.value.status == 422
    assert [d["field"] for d in refused.value.details] == ["body.candidates.block0.attn.1"]
    assert "do not divide the teacher's 5" in str(refused.value)
