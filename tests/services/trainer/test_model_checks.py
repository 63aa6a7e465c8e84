"""Every kind that takes a model directory runs the same model checks before queueing (issue 20, item
10): a config.json that cannot be built, or weights whose headers disagree with it, is a 422 naming the
field for distill and evaluate alike, where evaluate used to answer 201 and fail in the worker. The
check (shared/pretrained.py) reads no tensor and refuses what Decoder.from_pretrained fails on."""

import json
from pathlib import Path

import pytest

from shared.model import Decoder
from shared.pretrained import read_model, tensor_shapes
from shared.schemas.operators import (
    Architecture,
    AttentionOp,
    IdentityOp,
    LayerChoice,
    LinearOp,
    MLPOp,
)
from tests.hf_families import rewrite_header
from tests.services.trainer.conftest import TEST_TEACHER
from tests.services.trainer.test_hostile_input import field_of
from tests.services.trainer.test_jobs_api import distill_body


def change_config(directory: Path, **fields) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | fields))


ONE_BLOCK = {"choices": {"block0.attn": "attn_h4_kv2_d16", "block0.mlp": "mlp_i176"}}
BROKEN = {
    # the reproduction (refused by both kinds already: ModelShape's bounds)
    "hidden_size 10^9": (lambda d: change_config(d, hidden_size=10**9), "hidden_size"),
    "an architecture of one block on two": (
        lambda d: change_config(d, unast_architecture=ONE_BLOCK),
        "the model cannot be built: block1.attn: missing",
    ),
    "a DeciLM config without its blocks": (
        lambda d: change_config(d, model_type="nemotron-nas", block_configs=[{"attention": {}}]),
        "config.json: 'ffn' missing",
    ),
    "weights of another shape": (
        lambda d: rewrite_header(d / "model.safetensors", lambda h: h["lm_head.weight"]["shape"].reverse()),
        "the weights' lm_head.weight is [64, 384]",
    ),
    "a header whose offsets lie": (
        lambda d: rewrite_header(
            d / "model.safetensors", lambda h: h["lm_head.weight"]["shape"].__setitem__(0, 999)
        ),
        "model.safetensors: Error while deserializing header",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_distill_and_evaluate_refuse_a_model_that_cannot_be_built(sqlite_trainer, sqlite_teacher_dir, case):
    breaks, says = BROKEN[case]
    breaks(sqlite_teacher_dir)
    evaluate = {"kind": "evaluate", "model": {"source": "directory", "path": str(sqlite_teacher_dir)}}
    for body, field in ((distill_body(sqlite_teacher_dir), "body.teacher"), (evaluate, "body.model.path")):
        r = sqlite_trainer.http.post("/v1/jobs", json=body)
        assert r.status_code == 422, r.text
        assert field_of(r) == field and says in r.json()["error"]["message"], r.text
    assert sqlite_trainer.jobs().total == 0
    with pytest.raises(Exception):  # noqa: B017 (what the check refuses, the loader fails on)
        Decoder.from_pretrained(sqlite_teacher_dir)


def test_what_the_check_passes_the_loader_loads(tmp_path):
    """A teacher and a compressed model of every operator kind, tied embeddings: the headers match the
    model built from the config, tensor by tensor, as from_pretrained's strict load needs."""
    shape = TEST_TEACHER.model_copy(update={"family": "qwen2", "tie_word_embeddings": True})
    layers = [
        LayerChoice(attention=IdentityOp(), mlp=LinearOp()),
        LayerChoice(
            attention=AttentionOp(num_heads=2, num_kv_heads=1, head_dim=16), mlp=MLPOp(intermediate_size=32)
        ),
    ]
    for name, architecture in (("teacher", None), ("student", Architecture.from_layers(layers))):
        model = Decoder(shape, architecture)
        model.save_pretrained(tmp_path / name)
        expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
        assert tensor_shapes(shape, model.architecture) == expected
        assert read_model(tmp_path / name) == (shape, model.architecture)
        Decoder.from_pretrained(tmp_path / name)
