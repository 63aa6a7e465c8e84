"""What a user's serving stack makes of an export: transformers loads a compressed model offline with
the modeling code shipped beside it (trust_remote_code), with our logits and our greedy tokens; a model
of the teacher's sizes is its family's plain config; a plain family loader refuses anything else, so an
export is never read as something it is not (a depth-pruned model with random weights in its gaps)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from services.trainer.kinds.export import DECILM_DIR, write_decilm
from shared import hf_code
from shared.model import Decoder
from shared.schemas.operators import Architecture, AttentionOp, IdentityOp, LinearOp, MLPOp
from shared.schemas.shape import ModelShape
from tests.hf_families import teacher_checkpoint, write_checkpoint
from tests.shared.decilm_reference import read_blocks

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).parents[2]
TOLERANCE = 1e-4


def heterogeneous(shape: ModelShape) -> Architecture:
    """Fewer query heads, fewer KV heads and a smaller head size in block 0's attention, a linear MLP;
    a skipped attention and a narrower MLP in block 1."""
    smaller = AttentionOp(num_heads=shape.num_heads // 2, num_kv_heads=1, head_dim=shape.head_dim // 2)
    return (
        Architecture.teacher(shape)
        .replace("block0.attn", smaller)
        .replace("block0.mlp", LinearOp())
        .replace("block1.attn", IdentityOp())
        .replace("block1.mlp", MLPOp(intermediate_size=shape.intermediate_size // 3))
    )


def depth_only(shape: ModelShape) -> Architecture:
    return (
        Architecture.teacher(shape).replace("block1.attn", IdentityOp()).replace("block0.mlp", IdentityOp())
    )


def student(tmp_path: Path, teacher: str, architecture, **fields) -> tuple[Decoder, Path]:
    """A random student of `architecture` on a family's teacher shape, exported by save_pretrained."""
    if fields:
        write_checkpoint(
            tmp_path / "teacher", "llama", num_attention_heads=4, num_key_value_heads=2, **fields
        )
    else:
        teacher_checkpoint(tmp_path / "teacher", teacher)
    shape = Decoder.from_pretrained(tmp_path / "teacher").shape
    torch.manual_seed(0)
    model = Decoder(shape, architecture(shape)).eval()
    model.save_pretrained(tmp_path / "export")
    return model, tmp_path / "export"


def prompt(model: Decoder, n: int = 12) -> torch.Tensor:
    return torch.randint(0, model.shape.vocab_size, (1, n), generator=torch.Generator().manual_seed(3))


ROPES = {
    "yarn": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}},
    "linear": {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
    "dynamic": {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 24},
}
CASES = [(name, {}) for name in ("llama-8-2-tied-llama3", "qwen2", "qwen3", "mistral")]
CASES += [(f"llama-{rope}", fields) for rope, fields in ROPES.items()]


@pytest.mark.parametrize(("teacher", "fields"), CASES, ids=[c[0] for c in CASES])
def test_a_heterogeneous_export_loads_in_transformers_with_our_logits_and_tokens(tmp_path, teacher, fields):
    model, export = student(tmp_path, teacher, heterogeneous, **fields)
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == "unast" and set(hf_code.FILES) <= {p.name for p in export.iterdir()}
    loaded = transformers.AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True).eval()
    idx = torch.randint(0, model.shape.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (loaded(idx).logits - model(idx)).abs().max().item() <= TOLERANCE
        # past the window (Mistral: 8) and llama3's original 16, up to the model's positions
        new = min(30, model.shape.max_position_embeddings - 12)
        ours = model.generate(prompt(model), new, temperature=0)
        theirs = loaded.generate(prompt(model), max_new_tokens=new, do_sample=False)
    assert torch.equal(ours, theirs)
    assert Decoder.from_pretrained(export).architecture == model.architecture  # our loader reads it too


def test_greedy_tokens_equal_unast_generate(tmp_path):
    _, export = student(tmp_path, "qwen3", heterogeneous)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True).eval()
    code = (
        "import sys, torch; from shared.model import Decoder; "
        "m = Decoder.from_pretrained(sys.argv[1]).eval(); "
        "print(m.generate(torch.tensor([[5, 9, 2, 7]]), 25, temperature=0).tolist())"
    )
    done = subprocess.run([sys.executable, "-c", code, str(export)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    with torch.no_grad():
        theirs = loaded.generate(torch.tensor([[5, 9, 2, 7]]), max_new_tokens=25, do_sample=False)
    assert json.loads(done.stdout) == theirs.tolist()


@pytest.mark.parametrize("teacher", ["llama-8-2-tied-llama3", "qwen2", "mistral"])
def test_a_depth_only_export_is_refused_by_plain_loaders_never_filled_at_random(tmp_path, teacher):
    _, export = student(tmp_path, teacher, depth_only)
    family = transformers.AutoConfig.for_model(Decoder.from_pretrained(tmp_path / "teacher").shape.family)
    plain = getattr(transformers, family.architectures[0] if family.architectures else "LlamaForCausalLM")
    with pytest.raises(Exception) as refused:
        plain.from_pretrained(export)
    assert "intermediate_size" in str(refused.value) or "num_attention_heads" in str(refused.value)
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoModelForCausalLM.from_pretrained(export)


def test_a_model_of_the_teachers_sizes_is_its_familys_plain_config(tmp_path):
    teacher_checkpoint(tmp_path / "teacher", "qwen2")
    Decoder.from_pretrained(tmp_path / "teacher").save_pretrained(tmp_path / "export")
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["model_type"] == "qwen2" and "auto_map" not in config and "unast_architecture" not in config
    assert not any((tmp_path / "export" / name).exists() for name in hf_code.FILES)
    transformers.Qwen2ForCausalLM.from_pretrained(tmp_path / "export")  # no remote code


def test_the_nemotron_nas_folder_follows_the_form_and_loads_offline_exactly(tmp_path):
    """A servable architecture's nemotron-nas/ folder: the reference reader reads back its blocks,
    transformers loads it with the shipped code (attribute access to block_configs, as vLLM reads it),
    our loader reloads it bit for bit, and a plain Llama loader refuses it."""
    shape = ModelShape(
        vocab_size=96, hidden_size=64, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=16,
        intermediate_size=512, max_position_embeddings=128,
    )  # fmt: skip
    servable = (
        Architecture.teacher(shape)
        .replace("block0.attn", AttentionOp(num_heads=4, num_kv_heads=1, head_dim=16))
        .replace("block0.mlp", MLPOp(intermediate_size=256))
        .replace("block1.attn", IdentityOp())
        .replace("block1.mlp", LinearOp())
        .replace("block2.attn", LinearOp())
    )
    torch.manual_seed(0)
    model = Decoder(shape, servable).eval()
    model.save_pretrained(tmp_path)
    write_decilm(model, tmp_path)
    folder = tmp_path / DECILM_DIR
    config = json.loads((folder / "config.json").read_text())
    assert read_blocks(config) == [((4, 1, 16), 256), ("no_op", "linear"), ("linear", 512)]
    assert config["auto_map"] == hf_code.AUTO_MAP and set(hf_code.FILES) <= {p.name for p in folder.iterdir()}
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert loaded.config.block_configs[0].attention.n_heads_in_group == 4
    assert loaded.config.block_configs[1].ffn.replace_with_linear
    idx = torch.randint(0, shape.vocab_size, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (loaded(idx).logits - model(idx)).abs().max().item() <= TOLERANCE
        assert torch.equal(Decoder.from_pretrained(folder)(idx), model(idx))
        ours = model.generate(prompt(model), 20, temperature=0)
        assert torch.equal(loaded.generate(prompt(model), max_new_tokens=20, do_sample=False), ours)
    with pytest.raises(Exception, match="intermediate_size"):
        transformers.LlamaForCausalLM.from_pretrained(folder)
