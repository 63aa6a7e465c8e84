"""The teachers people bring, as `transformers` writes them: Llama of every head shape and RoPE type,
Qwen2 (q/k/v biases), Qwen3 (per-head q/k norms), Mistral (a sliding window), loaded by the project's
own model code with transformers' logits; what we do not compute exactly is refused in one line."""

import json

import pytest
import torch

from shared.model import Decoder
from shared.schemas.lut import shape_hash
from shared.schemas.shape import ModelShape
from tests.hf_families import TEACHERS, hf_config, teacher_checkpoint, write_checkpoint

transformers = pytest.importorskip("transformers")
TOLERANCE = 1e-4  # fp32, max abs difference of the logits


def ids(vocab: int, n: int = 40, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, n), generator=torch.Generator().manual_seed(1))


def max_difference(ours: Decoder, reference, idx: torch.Tensor) -> float:
    with torch.no_grad():
        return (ours(idx) - reference(idx).logits).abs().max().item()


@pytest.mark.parametrize("name", list(TEACHERS))
def test_each_family_loads_with_transformers_logits(tmp_path, name):
    reference = teacher_checkpoint(tmp_path / name, name)
    ours = Decoder.from_pretrained(tmp_path / name).eval()
    assert ours.shape.family == reference.config.model_type
    idx = ids(ours.shape.vocab_size)  # 40 tokens: past Mistral's window of 8 and llama3's original 16
    assert max_difference(ours, reference, idx) <= TOLERANCE


@pytest.mark.parametrize("name", list(TEACHERS))
def test_each_family_decodes_with_caches_as_its_full_forward(tmp_path, name):
    teacher_checkpoint(tmp_path / name, name)
    model = Decoder.from_pretrained(tmp_path / name).eval()
    idx = ids(model.shape.vocab_size, n=30, batch=1)
    with torch.no_grad():
        full = model(idx)
        caches = model.new_caches(1, 30)
        stepped = torch.cat(
            [model(idx[:, :12], caches)] + [model(idx[:, i : i + 1], caches) for i in range(12, 30)], 1
        )
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "scaling",
    [
        {"rope_type": "linear", "factor": 2.0},
        {"rope_type": "dynamic", "factor": 2.0},
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    ],
    ids=lambda s: s["rope_type"],
)
def test_rope_types_match_transformers_past_the_original_length(tmp_path, scaling):
    # 48 tokens: beyond max_position_embeddings (dynamic rescales there) and yarn's original 16
    fields = {"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32}
    reference = write_checkpoint(tmp_path / "m", "llama", rope_scaling=scaling, **fields)
    ours = Decoder.from_pretrained(tmp_path / "m").eval()
    assert max_difference(ours, reference, ids(ours.shape.vocab_size, n=48)) <= TOLERANCE
    assert max_difference(ours, reference, ids(ours.shape.vocab_size, n=12)) <= TOLERANCE


def test_llama3_rope_reads_alike_in_the_4x_and_5x_layouts(tmp_path):
    teacher_checkpoint(tmp_path / "m", "llama-8-2-tied-llama3")
    written = json.loads((tmp_path / "m" / "config.json").read_text())
    old = {k: v for k, v in written.items() if k != "rope_parameters"}
    old |= {"rope_theta": 500_000.0, "rope_scaling": TEACHERS["llama-8-2-tied-llama3"][1]["rope_scaling"]}
    assert ModelShape.from_hf_config(old) == ModelShape.from_hf_config(written)


@pytest.mark.parametrize("name", list(TEACHERS))
def test_a_saved_teacher_loads_in_transformers_as_its_family(tmp_path, name):
    teacher_checkpoint(tmp_path / "hf", name)
    ours = Decoder.from_pretrained(tmp_path / "hf").eval()
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert type(again).__name__ == ours.shape.traits.architecture
    assert max_difference(ours, again, ids(ours.shape.vocab_size)) <= TOLERANCE
    reread = Decoder.from_pretrained(tmp_path / "ours").shape
    assert reread == ours.shape.model_copy(update={"name": reread.name})


REFUSED = {
    "hidden_act": ("llama", {"hidden_act": "gelu"}),
    "attention_bias": ("llama", {"attention_bias": True}),
    "mlp_bias": ("llama", {"mlp_bias": True}),
    "use_sliding_window": (
        "qwen2",
        {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0},
    ),
    "rope_scaling": (
        "llama",
        {"rope_scaling": {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8}},
    ),
    "model_type": ("phi3", {}),
}


@pytest.mark.parametrize("field", list(REFUSED))
def test_what_is_not_computed_exactly_is_refused_in_one_line_naming_the_field(field):
    model_type, fields = REFUSED[field]
    config = hf_config(model_type, num_attention_heads=4, num_key_value_heads=2, **fields).to_dict()
    with pytest.raises(ValueError) as refused:
        ModelShape.from_hf_config(config)
    message = str(refused.value)
    assert message.startswith(f"{field}:") and "\n" not in message, message


@pytest.mark.parametrize("model_type", ["gemma", "phi3", "gpt2"])
def test_other_families_are_refused_by_name(model_type):
    config = transformers.AutoConfig.for_model(model_type).to_dict()
    with pytest.raises(ValueError, match=f"^model_type: '{model_type}' is not supported"):
        ModelShape.from_hf_config(config)


def test_the_family_is_part_of_the_shape_hash_and_a_llama_hash_is_unchanged():
    sizes = dict(
        vocab_size=96,
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=96,
    )
    llama, qwen3 = ModelShape(**sizes), ModelShape(family="qwen3", **sizes)
    assert shape_hash(llama) != shape_hash(qwen3)
    import hashlib

    before = json.dumps(
        llama.model_dump(mode="json", exclude={"name", "family", "sliding_window"}),
        sort_keys=True,
        separators=(",", ":"),
    )
    assert shape_hash(llama) == hashlib.sha256(before.encode()).hexdigest()[:16]
    with pytest.raises(ValueError, match="sliding_window"):
        ModelShape(sliding_window=8, **sizes)
