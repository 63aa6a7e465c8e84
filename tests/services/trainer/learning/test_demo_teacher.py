"""The committed demo teacher (models/shakespeare-teacher, made by `unast teacher --steps 3000`)."""

import json
import math
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from services.trainer.learning import data
from shared.model import Decoder

TEACHER = Path(__file__).parents[4] / "models" / "shakespeare-teacher"


@pytest.fixture(scope="module")
def teacher() -> Decoder:
    return Decoder.from_pretrained(TEACHER).eval()


def test_it_is_a_trained_model_of_held_out_shakespeare(teacher):
    record = json.loads((TEACHER / "training.json").read_text())
    assert record["heldout_ppl"] < record["unigram_heldout_ppl"] / 5
    tokenizer = Tokenizer.from_file(str(TEACHER / "tokenizer.json"))
    hamlet = data.play_text(data.play_files()["hamlet"].read_text(encoding="utf-8"))  # a held-out play
    tokens = data.encode(tokenizer, [hamlet[:60_000]])
    with torch.no_grad():
        losses = [teacher.loss(x, y).item() for x, y in data.heldout_batches(tokens, 4, 256, 4)]
    perplexity = math.exp(sum(losses) / len(losses))
    assert perplexity < 2 * record["heldout_ppl"], perplexity  # near what training recorded
    assert perplexity < record["unigram_heldout_ppl"] / 4


def test_transformers_loads_it_unchanged(teacher):
    transformers = pytest.importorskip("transformers")
    reference = transformers.LlamaForCausalLM.from_pretrained(TEACHER).eval()
    idx = torch.randint(0, teacher.shape.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(teacher(idx), reference(idx).logits, atol=1e-4, rtol=1e-4)
