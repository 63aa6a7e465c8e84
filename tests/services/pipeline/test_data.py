"""`unast compress --data`: a folder, a .txt, a .jsonl and a .parquet become a dataset folder the
trainer reads, with the token counts its jobs see; bad data is one line and exit 2 before anything
starts."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from services import cli
from services.pipeline import compress, data
from services.pipeline.record import digest
from services.trainer.learning.data import job_tokens
from shared.dataset_folder import EOS, documents
from shared.schemas.trainer import DistillResult, DistillSpec, ExportSpec, FinetunedModel
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
TEACHER = ROOT / "models" / "shakespeare-teacher"  # the demo teacher and its tokenizer
SOURCES = ("folder", "txt", "jsonl", "parquet")


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TEACHER / "tokenizer.json"))


def texts(n: int = 30) -> list[str]:
    return [
        f"SPEAKER {i}:\nThe {i}th speech, of words that vary: " + "and so on, " * (5 + i % 7)
        for i in range(n)
    ]


def tokens(tokenizer: Tokenizer, docs: list[str]) -> int:
    """What the trainer streams: each document's tokens, then the end-of-text token."""
    assert tokenizer.token_to_id(EOS) is not None
    return sum(len(tokenizer.encode(doc).ids) + 1 for doc in docs)


def make(source: str, directory: Path) -> tuple[Path, list[str], list[str]]:
    """The data of one kind in `directory`: (its path, the training and held-out documents to expect,
    as the trainer will read them)."""
    docs = texts()
    directory.mkdir(parents=True, exist_ok=True)
    if source == "folder":  # both parts given: each file as it is
        (directory / "train.txt").write_text("\n\n".join(docs[:25]) + "\n")
        (directory / "heldout.txt").write_text("\n\n".join(docs[25:]) + "\n")
        return directory, ["\n\n".join(docs[:25]) + "\n"], ["\n\n".join(docs[25:]) + "\n"]
    held = data.heldout_positions(len(docs))
    assert len(held) == 3  # 10% of 30
    train = [d for i, d in enumerate(docs) if i not in held]
    heldout = [d for i, d in enumerate(docs) if i in held]
    if source == "txt":  # paragraphs: the kept ones stay one running text
        path = directory / "plays.txt"
        path.write_text("\n\n".join(docs))
        return path, ["\n\n".join(train)], ["\n\n".join(heldout)]
    rows = [{"id": i, "body": d} for i, d in enumerate(docs)]
    if source == "jsonl":
        path = directory / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path = directory / "rows.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path, train, heldout  # a row each


def settings_in(root: Path) -> Settings:
    return Settings(artifacts_root=root / "artifacts", input_roots=[root / "inputs"])


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_becomes_a_dataset_folder_with_the_tokens_the_trainer_reads(
    tmp_path, tokenizer, source, monkeypatch
):
    path, train, heldout = make(source, tmp_path / "given")
    settings = settings_in(tmp_path)
    prepared = data.prepare(path, "body", TEACHER, settings, 100)
    assert prepared.directory.parent == (settings.artifacts_root / "datasets").resolve()
    assert prepared.directory.name == prepared.key
    assert prepared.tokens == {"train": tokens(tokenizer, train), "heldout": tokens(tokenizer, heldout)}
    # what a trainer job reads from the folder: the same documents and the same token counts
    written = {part: (prepared.directory / f"{part}.txt").read_text() for part in ("train", "heldout")}
    assert (documents(written["train"]), documents(written["heldout"])) == (train, heldout)
    train_ids, heldout_ids = job_tokens(str(prepared.directory), TEACHER)
    assert (len(train_ids), len(heldout_ids)) == (prepared.tokens["train"], prepared.tokens["heldout"])
    units = {"folder": (1, 1), "txt": (27, 3), "jsonl": (27, 3), "parquet": (27, 3)}[source]
    assert (prepared.documents["train"], prepared.documents["heldout"]) == units

    # found again without reading the data; the same data elsewhere makes the same folder
    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("read again"))
    assert data.prepare(path, "body", TEACHER, settings, 1) == prepared
    monkeypatch.undo()
    again = data.prepare(path, "body", TEACHER, settings_in(tmp_path / "elsewhere"), 1)
    assert again.key == prepared.key and again.tokens == prepared.tokens
    for name in ("train.txt", "heldout.txt"):
        assert (again.directory / name).read_bytes() == (prepared.directory / name).read_bytes()


def test_other_data_is_another_folder_and_every_job_reads_it(tmp_path):
    settings = settings_in(tmp_path)
    (tmp_path / "a.txt").write_text("\n\n".join(texts()))
    (tmp_path / "b.txt").write_text("\n\n".join(texts()[1:]))
    a, b = (data.prepare(tmp_path / n, "text", TEACHER, settings, 1) for n in ("a.txt", "b.txt"))
    assert a.key != b.key and a.directory != b.directory
    (tmp_path / "folder").mkdir()  # a folder without heldout.txt: its train.txt read as a .txt
    (tmp_path / "folder" / "train.txt").write_bytes((tmp_path / "a.txt").read_bytes())
    assert data.prepare(tmp_path / "folder", "text", TEACHER, settings, 1).directory == a.directory
    spec = DistillSpec(teacher=str(TEACHER), steps=1)
    assert data.with_dataset(spec, None) == spec  # the built-in corpus: the spec (and its key) unchanged
    assert data.with_dataset(spec, a).dataset == str(a.directory)
    assert digest("distill", data.with_dataset(spec, a)) != digest("distill", data.with_dataset(spec, b))
    export = ExportSpec(model=FinetunedModel(finetune_job="j"))  # no dataset: as it is
    assert data.with_dataset(export, a) == export
    (line,) = data.report_lines(a)
    assert f"training {a.tokens['train']:,} tokens in 27 paragraphs" in line
    assert f"held-out {a.tokens['heldout']:,} tokens in 3 paragraphs" in line
    # the job's own counts when its trainer reports them; the built-in corpus says what it is
    job = DistillResult(
        teacher="t", heldout_nmse={}, operators={}, world_size=1, train_tokens=9, heldout_tokens=1
    )
    assert "training 9 tokens in 27 paragraphs, held-out 1 tokens" in data.report_lines(a, job)[0]
    assert data.report_lines(None, job) == [
        "Data: the built-in corpus (38 Shakespeare plays, 4 whole plays held out): training 9 tokens, "
        "held-out 1 tokens."
    ]


def test_the_trainer_splits_a_file_into_documents_at_the_end_of_text_marker():
    assert documents(f"one{EOS}two{EOS}") == ["one", "two"]
    assert documents("no marker\n\nat all\n") == ["no marker\n\nat all\n"]


# -- bad data: one line, exit 2, nothing started ---------------------------------------------------

BAD = {
    "empty": ("empty.txt", b""),
    "not UTF-8": ("latin1.txt", "Caf\xe9 au lait\n\nand more\n".encode("latin-1")),
    "missing field": ("rows.jsonl", b'{"body": "words"}\n{"body": "more words"}\n'),
    "too few tokens": ("short.txt", b"A short text.\n\nAnother paragraph.\n"),
    "no such path": ("missing.jsonl", None),
}
EXPECTED = {
    "empty": "empty.txt is empty",
    "not UTF-8": "latin1.txt is not UTF-8 (byte 3)",
    "missing field": "rows.jsonl has no field 'text' (--text-field; its fields: 'body')",
    "too few tokens": "the training part has",
    "no such path": "no such file or folder",
}


def bad_data(tmp_path: Path, case: str) -> Path:
    name, content = BAD[case]
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line_and_exit_2_before_the_stack_starts(tmp_path, case, capfd, monkeypatch):
    path = bad_data(tmp_path, case)
    monkeypatch.setattr(compress, "services", lambda *a, **k: pytest.fail("the stack was started"))
    argv = ["compress", "--model", str(TEACHER), "--latency", "0.5", "--data", str(path)]
    with pytest.raises(SystemExit) as exit:
        cli.main([*argv, "--out", str(tmp_path / "run")])
    assert exit.value.code == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"unast compress: --data {path}: {EXPECTED[case]}"), err
    assert not (tmp_path / "run").exists()  # no run.json, no stack.log


def test_the_command_refuses_bad_data_in_one_line(tmp_path):
    path = bad_data(tmp_path, "missing field")
    argv = ["compress", "--model", str(TEACHER), "--latency", "0.5", "--data", str(path)]
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *argv, "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"unast compress: --data {path}: {EXPECTED['missing field']}"]
    assert not (tmp_path / "run" / "stack.log").exists()
