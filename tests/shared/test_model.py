import json

import pytest
import torch

from shared.model import Decoder
from shared.schemas.operators import Architecture, AttentionOp, IdentityOp, LinearOp, MLPOp
from shared.schemas.shape import PRESETS, ModelShape

TINY = PRESETS["tiny"]


def hf_model(shape: ModelShape, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        **{k: v for k, v in shape.to_hf_config().items() if k != "architectures"}
    )
    return transformers.LlamaForCausalLM(config).eval()


def tokens(shape: ModelShape, n: int = 12, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, shape.vocab_size, (batch, n), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tied", [False, True])
def test_same_logits_as_transformers_on_the_same_weights(tmp_path, tied):
    shape = TINY.model_copy(update={"tie_word_embeddings": tied})
    reference = hf_model(shape)
    reference.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = Decoder.from_pretrained(tmp_path / "hf").eval()
    idx = tokens(shape)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), reference(idx).logits, atol=1e-5, rtol=1e-4)


def test_llama3_rope_scaling_matches_transformers(tmp_path):
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    shape = TINY.model_copy(update={"rope_scaling": scaling, "rope_theta": 500000.0})
    reference = hf_model(shape)
    reference.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = Decoder.from_pretrained(tmp_path / "hf").eval()
    idx = tokens(shape, n=100, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), reference(idx).logits, atol=1e-5, rtol=1e-4)


def test_our_teacher_checkpoint_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = Decoder(TINY).eval()
    ours.save_pretrained(tmp_path / "teacher")
    assert "unast_architecture" not in json.loads((tmp_path / "teacher" / "config.json").read_text())
    reference = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "teacher").eval()
    idx = tokens(TINY)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), reference(idx).logits, atol=1e-5, rtol=1e-4)


def heterogeneous() -> Architecture:
    arch = Architecture.teacher(TINY)
    arch = arch.replace("block0.attn", AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8))
    arch = arch.replace("block0.mlp", LinearOp())
    arch = arch.replace("block1.attn", IdentityOp())
    return arch.replace("block1.mlp", MLPOp(intermediate_size=32))


def test_heterogeneous_model_round_trips_through_its_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = Decoder(TINY, heterogeneous()).eval()
    model.save_pretrained(tmp_path / "student")
    (tmp_path / "student" / "tokenizer.json").write_text("{}")
    model.save_pretrained(tmp_path / "student")  # overwriting keeps files beside the model
    assert (tmp_path / "student" / "tokenizer.json").exists()
    loaded = Decoder.from_pretrained(tmp_path / "student").eval()
    assert loaded.architecture == model.architecture
    idx = tokens(TINY)
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), model(idx))


def test_identity_slots_skip_and_the_model_decodes_with_caches():
    torch.manual_seed(0)
    model = Decoder(TINY, heterogeneous()).eval()
    idx = tokens(TINY, n=10, batch=1)
    caches = model.new_caches(batch=1, max_len=10)
    assert caches[1] is None  # block1's attention is the identity: nothing to cache
    with torch.no_grad():
        full = model(idx)
        stepwise = torch.cat(
            [model(idx[:, :6], caches)] + [model(idx[:, t : t + 1], caches) for t in range(6, 10)], 1
        )
    torch.testing.assert_close(stepwise, full, atol=1e-5, rtol=1e-4)


def test_only_safetensors_are_loaded(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(TINY.to_hf_config()))
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        Decoder.from_pretrained(tmp_path / "m")


def test_hf_config_round_trip_and_refusals():
    assert ModelShape.from_hf_config(PRESETS["llama3-8b"].to_hf_config()).model_dump(
        exclude={"name"}
    ) == PRESETS["llama3-8b"].model_dump(exclude={"name"})
    with pytest.raises(ValueError, match="model_type"):
        ModelShape.from_hf_config({**TINY.to_hf_config(), "model_type": "gpt2"})


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Decoder(TINY)
    model.save_pretrained(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()

    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("shared.model.save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        Decoder(TINY).save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_running_from_a_slot_continues_the_teacher_exactly():
    torch.manual_seed(0)
    model = Decoder(TINY).eval()
    idx = tokens(TINY)
    with torch.no_grad():
        x = model.embed(idx)
        for index, (_, op) in enumerate(model.slots()):
            if index == 3:
                torch.testing.assert_close(model.head(model.forward_slots(x, start=3)), model(idx))
            x = x + op(x)
