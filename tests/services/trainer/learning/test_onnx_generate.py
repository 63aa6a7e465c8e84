"""The ONNX graph generates: it takes and returns the KV cache, so onnxruntime decodes greedily with the
tokens `Decoder.generate(..., temperature=0)` picks; its full-sequence logits stay within 1e-4 of
torch's; a prefill then several tokens after the past give the full forward's logits. For a
heterogeneous Llama student and the Qwen2 (biases), Qwen3 (q/k norms) and Mistral (a sliding window of
8, passed) teachers that transformers writes. One export per model, shared by the module's tests."""

from pathlib import Path

import numpy as np
import pytest
import torch

from services.trainer.learning.onnx_export import (
    INPUT,
    OUTPUT,
    WithPast,
    empty_pasts,
    export_onnx,
    names,
    onnx_generate,
    onnx_logits,
    onnx_session,
    session_pasts,
)
from shared.model import Decoder
from shared.schemas.operators import Architecture, AttentionOp, IdentityOp, LinearOp, MLPOp
from shared.schemas.shape import PRESETS
from tests.hf_families import random_weights, teacher_checkpoint

pytest.importorskip("onnxruntime")
TOLERANCE = 1e-4  # the export job's: largest |logit difference| between onnxruntime and torch
MODELS = ["heterogeneous", "attention-free", "qwen2", "qwen3", "mistral"]
SPLITS = [(5, 3), (10, 3), (12, 1), (3, 12)]  # (past, new tokens): Mistral's window is 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def heterogeneous() -> Decoder:
    """Fewer query and KV heads and a smaller head_dim, a linear MLP, an identity attention, a narrower
    MLP, then a teacher block: blocks 0 and 2 keep caches, block 1 none. Weights far from 0.02 so
    greedy choices are clear."""
    tiny = PRESETS["tiny"]
    arch = Architecture.teacher(tiny.model_copy(update={"num_layers": 3}))
    arch = arch.replace("block0.attn", AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8))
    arch = arch.replace("block0.mlp", LinearOp())
    arch = arch.replace("block1.attn", IdentityOp())
    arch = arch.replace("block1.mlp", MLPOp(intermediate_size=32))
    torch.manual_seed(0)
    model = Decoder(tiny.model_copy(update={"num_layers": 3}), arch).eval()
    random_weights(model)
    return model


def attention_free() -> Decoder:
    """No slot keeps a cache (a linear and an identity attention): the graph takes input_ids only."""
    tiny = PRESETS["tiny"]
    arch = Architecture.teacher(tiny)
    arch = arch.replace("block0.attn", LinearOp()).replace("block1.attn", IdentityOp())
    torch.manual_seed(0)
    model = Decoder(tiny, arch).eval()
    random_weights(model)
    return model


@pytest.fixture(scope="module", params=MODELS)
def exported(request, tmp_path_factory) -> tuple[Decoder, Path]:
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "heterogeneous":
        model = heterogeneous()
    elif request.param == "attention-free":
        model = attention_free()
    else:
        pytest.importorskip("transformers")
        teacher_checkpoint(directory / "teacher", request.param)
        model = Decoder.from_pretrained(directory / "teacher").eval()
    path = directory / "model.onnx"
    export_onnx(model, path, model.shape.max_position_embeddings)
    return model, path


def ids(model: Decoder, tokens: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.shape.vocab_size, (batch, tokens), generator=generator)


def test_graph_inputs_and_outputs_name_each_cached_block(exported):
    model, path = exported
    session = onnx_session(path)
    inputs, outputs = names(model)
    assert [a.name for a in session.get_inputs()] == inputs
    assert [a.name for a in session.get_outputs()] == outputs
    blocks = [i for i, b in enumerate(model.blocks) if hasattr(b.attention, "new_cache")]
    assert inputs[1:] == [f"{kind}.{i}" for i in blocks for kind in ("past_key", "past_value")]
    for arg in session.get_inputs()[1:]:
        attention = model.blocks[int(arg.name.split(".")[1])].attention
        assert arg.shape[1:2] + arg.shape[3:] == [attention.num_kv_heads, attention.head_dim]


def test_full_sequence_logits_within_tolerance(exported):
    model, path = exported
    idx = ids(model, 20)  # past Mistral's window
    with torch.no_grad():
        reference = model(idx)
    assert (torch.from_numpy(onnx_logits(path, idx)) - reference).abs().max().item() <= TOLERANCE


def test_greedy_tokens_equal_ours(exported):
    model, path = exported
    prompt = ids(model, 6, seed=2)  # 6 + 20 positions: well past Mistral's window of 8
    ours = model.generate(prompt, 20, temperature=0)
    theirs = onnx_generate(path, prompt, 20)
    assert theirs.shape == (2, 26)
    assert torch.equal(theirs, ours)


def run(session, idx: torch.Tensor, pasts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    outputs = [o.name for o in session.get_outputs()]
    feeds = {INPUT: idx.numpy(), **pasts}
    return dict(zip(outputs, session.run(outputs, feeds), strict=True))


@pytest.mark.parametrize(("past", "tokens"), SPLITS)
def test_tokens_after_a_past_give_the_full_forwards_logits(exported, past, tokens):
    model, path = exported
    session = onnx_session(path)
    idx = ids(model, past + tokens)
    with torch.no_grad():
        full = model(idx)
        # torch's own graph function on the same split, before the runtime's
        wrapped = WithPast(model)
        first = wrapped(idx[:, :past], empty_pasts(model, 2))
        second = wrapped(idx[:, past:], first[1:])
    torch.testing.assert_close(second[0], full[:, past:], atol=TOLERANCE, rtol=0)
    prefill = run(session, idx[:, :past], session_pasts(session, 2))
    pasts = {k.replace("present", "past"): v for k, v in prefill.items() if k != OUTPUT}
    assert all(v.shape[2] == past for v in pasts.values())
    after = run(session, idx[:, past:], pasts)
    assert all(v.shape[2] == past + tokens for k, v in after.items() if k != OUTPUT)
    np.testing.assert_allclose(prefill[OUTPUT], full[:, :past].numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(after[OUTPUT], full[:, past:].numpy(), atol=TOLERANCE, rtol=0)


def test_dynamic_rope_is_refused(tmp_path):
    shape = PRESETS["tiny"].model_copy(update={"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})
    with pytest.raises(ValueError, match="dynamic RoPE"):
        export_onnx(Decoder(shape).eval(), tmp_path / "model.onnx", 64)
    assert not (tmp_path / "model.onnx").exists()
