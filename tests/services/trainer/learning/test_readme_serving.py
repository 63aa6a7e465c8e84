"""README's "Use the compressed model" snippets run as written on an export (the demo's tokenizer, a
tiny heterogeneous student of a Qwen3 teacher), and print what `unast generate` prints greedily."""

import contextlib
import io
import re
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from services.trainer.learning.onnx_export import export_onnx
from shared.model import Decoder
from shared.schemas.operators import Architecture, AttentionOp, IdentityOp, LinearOp
from shared.schemas.shape import ModelShape

pytest.importorskip("transformers")
ROOT = Path(__file__).parents[4]
DEMO = ROOT / "models" / "shakespeare-teacher"


def snippets() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use the compressed model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> tuple[Path, str]:
    """A student export with the demo's tokenizer, and what our model greedily continues 'ROMEO:' with."""
    directory = tmp_path_factory.mktemp("serving") / "runs" / "NAME" / "model"
    vocab = Decoder.from_pretrained(DEMO).shape.vocab_size
    shape = ModelShape(
        family="qwen3", vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=16, intermediate_size=96, max_position_embeddings=128,
    )  # fmt: skip
    architecture = (
        Architecture.teacher(shape)
        .replace("block0.attn", AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8))
        .replace("block0.mlp", LinearOp())
        .replace("block1.mlp", IdentityOp())
    )
    torch.manual_seed(0)
    model = Decoder(shape, architecture).eval()
    model.save_pretrained(directory)
    for file in DEMO.glob("tokenizer*"):
        shutil.copy(file, directory)
    export_onnx(model, directory / "model.onnx", shape.max_position_embeddings)
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    prompt = torch.tensor([tokenizer.encode("ROMEO:").ids])
    with torch.no_grad():
        ours = model.generate(prompt, 50, temperature=0)
    return directory, tokenizer.decode(ours[0].tolist())


@pytest.mark.parametrize("index", [0, 1], ids=["transformers", "onnxruntime"])
def test_the_readmes_serving_snippets_run_and_generate_as_we_do(export, index, monkeypatch):
    directory, expected = export
    code = snippets()[index]
    assert "runs/NAME/model" in code
    monkeypatch.chdir(directory.parents[2])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"README snippet {index}", "exec"), {})
    assert printed.getvalue().strip() == expected.strip()
