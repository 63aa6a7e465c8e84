"""`unast compress --data PATH`: a run's own text, read, checked and prepared before the stack starts.

PATH is a folder with train.txt (and heldout.txt), one .txt file, or a .jsonl or .parquet file whose
rows hold the text in one field (--text-field). Files are read with Hugging Face `datasets` from the
local files only (offline; its cache in a temporary folder). A document is a row of a table, or a
paragraph (text between blank lines) of a .txt; a folder's train.txt and heldout.txt are taken as they
are. Without a held-out part, HELDOUT_SHARE of the documents are held out, chosen by a hash of their
position (the same every time, whatever the library versions).

The result is a dataset folder the trainer reads (shared/dataset_folder.py: train.txt, heldout.txt,
a table's rows separated by the end-of-text marker, a .txt's kept paragraphs by a blank line), written
once under `<artifacts root>/datasets/<key>/`, where key is a digest of the source's bytes and of how
it was read; a run given the same data finds it there. Its token counts in the teacher's tokenizer
are cached beside it by the tokenizer's digest (`tokens-<digest>.json`).

Every problem is a DataError of one line, raised before anything starts: no such path, a format not
read here, an empty source, bytes that are not UTF-8, a missing or non-text field, a part with fewer
tokens than one batch of the run's configuration.
"""

import codecs
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from tokenizers import Tokenizer

from services.pipeline.configs import Config
from shared.dataset_folder import EOS, FILES, documents, token_ids
from shared.files import atomic_path
from shared.schemas.trainer import DistillResult, JobSpec
from shared.settings import Settings

BUILTIN = "shakespeare"
HELDOUT_SHARE = 0.1  # of the documents, when the data has no held-out part
FORMAT = 1  # bump when reading, splitting or writing changes: prepared folders are made anew
READERS = {".txt": "text", ".jsonl": "json", ".parquet": "parquet"}  # suffix -> the datasets builder
RECORD = "dataset.json"
CHUNK = 1 << 20


class DataError(ValueError):
    """Bad data, in one line naming the problem."""


class DatasetRecord(BaseModel):
    """dataset.json in a prepared folder: where the data came from and how it was read and split."""

    format: int
    key: str
    source: str  # the first path it was prepared from
    reader: str  # the datasets builder: text, json, parquet
    text_field: str | None
    unit: str  # what a document is: "rows", "paragraphs", "files"
    heldout: str  # how the held-out part was made
    documents: dict[str, int]  # "train", "heldout"


@dataclass(frozen=True)
class Prepared:
    """A prepared dataset: the folder the trainer's jobs are given, and what the report says of it."""

    source: str  # --data, as resolved
    directory: Path  # train.txt, heldout.txt, dataset.json
    key: str
    documents: dict[str, int]  # "train", "heldout"
    unit: str  # what a document is: "rows", "paragraphs", "files"
    heldout: str  # how the held-out part was made
    tokens: dict[str, int]  # in the teacher's tokenizer, as the trainer streams them


def batch_tokens(config: Config) -> int:
    """The tokens of the largest batch any job of the configuration takes (windows of seq_len + 1)."""
    return max(config.distill_batch, config.batch) * (config.seq_len + 1)


def with_dataset(spec: JobSpec, prepared: Prepared | None) -> JobSpec:
    """A trainer job's spec reading the run's data: every job of a run reads the same (a spec without
    a dataset, and any spec of a run on the built-in corpus, stays as it is)."""
    if prepared is None or "dataset" not in type(spec).model_fields:
        return spec
    return spec.model_copy(update={"dataset": str(prepared.directory)})


def report_lines(prepared: Prepared | None, distilled: DistillResult | None = None) -> list[str]:
    """What the report says of the data: the source, and each part's tokens (as the distill job counted
    them when its trainer reports it, else as counted here) and documents."""
    tokens = None
    if distilled is not None and distilled.train_tokens is not None and distilled.heldout_tokens is not None:
        tokens = {"train": distilled.train_tokens, "heldout": distilled.heldout_tokens}
    if prepared is None:
        counted = ""
        if tokens:
            counted = f": training {tokens['train']:,} tokens, held-out {tokens['heldout']:,} tokens"
        return [f"Data: the built-in corpus (38 Shakespeare plays, 4 whole plays held out){counted}."]
    tokens = tokens or prepared.tokens
    docs, unit = prepared.documents, prepared.unit
    return [
        f"Data `{prepared.source}` (prepared as `{prepared.directory}`): training {tokens['train']:,} "
        f"tokens in {docs['train']:,} {unit}, held-out {tokens['heldout']:,} tokens in "
        f"{docs['heldout']:,} {unit} ({prepared.heldout}); tokens in the teacher's tokenizer, as the "
        "trainer reads them."
    ]


def one_line(text: object) -> str:
    return " ".join(str(text).split()) or type(text).__name__


def datasets_root(settings: Settings) -> Path:
    """Where prepared datasets live: inside the artifacts root, which every trainer job may read."""
    return settings.artifacts_root / "datasets"


def prepare(path: Path, text_field: str, teacher: Path, settings: Settings, batch_tokens: int) -> Prepared:
    """--data read, checked and written as a dataset folder (or found written), with its token counts
    in the teacher's tokenizer; each part must hold at least `batch_tokens` tokens (one batch)."""
    source = path.resolve()
    kind, files = source_files(source)
    for file in files.values():
        check_file(file, kind)
    key = cache_key(kind, text_field if kind in ("json", "parquet") else None, files)
    directory = datasets_root(settings).resolve() / key
    record = read_record(directory, key)
    if record is None:
        train, heldout, how = read_parts(kind, files, text_field)
        unit = "files" if "heldout" in files else "rows" if kind in ("json", "parquet") else "paragraphs"
        separator = EOS if kind in ("json", "parquet") else "\n\n"
        record = DatasetRecord(
            format=FORMAT,
            key=key,
            source=str(source),
            reader=kind,
            text_field=text_field if kind in ("json", "parquet") else None,
            unit=unit,
            heldout=how,
            documents={"train": len(train), "heldout": len(heldout)},
        )
        write_folder(directory, {"train": separator.join(train), "heldout": separator.join(heldout)}, record)
    tokens = token_counts(directory, teacher)
    for part, name in (("train", "training"), ("heldout", "held-out")):
        if tokens[part] < batch_tokens:
            raise DataError(
                f"the {name} part has {tokens[part]:,} tokens in the teacher's tokenizer, fewer than one "
                f"batch of the configuration ({batch_tokens:,})"
            )
    return Prepared(
        source=str(source),
        directory=directory,
        key=key,
        documents=record.documents,
        unit=record.unit,
        heldout=record.heldout,
        tokens=tokens,
    )


# -- the source -----------------------------------------------------------------------------------


def source_files(source: Path) -> tuple[str, dict[str, Path]]:
    """(the datasets builder, role -> file): "train" always, "heldout" when the data has one."""
    if not source.exists():
        raise DataError("no such file or folder")
    if source.is_dir():
        present = {name: source / name for name in FILES if (source / name).is_file()}
        if "train.txt" not in present:
            raise DataError("a folder needs train.txt (and heldout.txt: without it, a share is held out)")
        return "text", {Path(name).stem: file for name, file in present.items()}
    kind = READERS.get(source.suffix.lower())
    if kind is None:
        suffixes = ", ".join(list(READERS)[:-1]) + f" or {list(READERS)[-1]}"
        raise DataError(f"not a folder or a {suffixes} file ({source.suffix or 'no suffix'})")
    return kind, {"train": source}


def check_file(file: Path, kind: str) -> None:
    """Empty, or (for text read as text) not UTF-8: found before any reader runs."""
    if file.stat().st_size == 0:
        raise DataError(f"{file.name} is empty")
    if kind == "parquet":
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with file.open("rb") as f:
        while chunk := f.read(CHUNK):
            try:
                decoder.decode(chunk)
                offset += len(chunk)
            except UnicodeDecodeError as exc:
                raise DataError(f"{file.name} is not UTF-8 (byte {offset + exc.start:,})") from None
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise DataError(f"{file.name} is not UTF-8 (it ends inside a character)") from None


def cache_key(kind: str, text_field: str | None, files: dict[str, Path]) -> str:
    """A digest of the bytes of each file in its role, and of how they are read and split."""
    digest = hashlib.sha256(json.dumps([FORMAT, kind, text_field, HELDOUT_SHARE]).encode())
    for role in sorted(files):
        digest.update(role.encode() + b"\0")
        with files[role].open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def read_parts(kind: str, files: dict[str, Path], text_field: str) -> tuple[list[str], list[str], str]:
    """(training documents, held-out documents, how the held-out part was made)."""
    if "heldout" in files:  # a folder with both parts: each file as it is
        train, heldout = (load(kind, files[role], text_field, whole=True) for role in ("train", "heldout"))
        return train, heldout, "the held-out part given"
    docs = load(kind, files["train"], text_field, whole=False)
    if len(docs) < 2:
        raise DataError("one document: nothing to hold out (give more, or a folder with heldout.txt)")
    held = heldout_positions(len(docs))
    train = [d for i, d in enumerate(docs) if i not in held]
    heldout = [d for i, d in enumerate(docs) if i in held]
    return train, heldout, f"{HELDOUT_SHARE:.0%} held out, chosen by a fixed rule"


def heldout_positions(n: int) -> set[int]:
    """HELDOUT_SHARE of n documents (at least one, never all), chosen by a hash of their position."""
    count = min(n - 1, max(1, round(n * HELDOUT_SHARE)))
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"unast-heldout:{i}".encode()).digest())
    return set(order[:count])


def load(kind: str, file: Path, text_field: str, *, whole: bool) -> list[str]:
    """A file's documents (blank ones dropped), read by `datasets` from the local file only."""
    datasets = offline_datasets()
    options: dict[str, Any] = {"sample_by": "document" if whole else "paragraph"} if kind == "text" else {}
    with tempfile.TemporaryDirectory(prefix="unast-data-") as cache:
        try:
            table = datasets.load_dataset(
                kind, data_files=str(file), split="train", cache_dir=cache, **options
            )
        except Exception as exc:  # the library's errors wrap the reader's (pyarrow, json): name the cause
            cause = exc.__cause__ or exc.__context__ or exc
            raise DataError(f"{file.name} cannot be read as {kind}: {one_line(cause)}") from None
        field = "text" if kind == "text" else text_field
        if field not in table.column_names:
            fields = ", ".join(repr(c) for c in table.column_names) or "none"
            raise DataError(f"{file.name} has no field {field!r} (--text-field; its fields: {fields})")
        feature = table.features[field]
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            raise DataError(f"{file.name}: field {field!r} holds {feature}, not text")
        texts = table[field]
    missing = [i for i, text in enumerate(texts) if text is None]
    if missing:
        raise DataError(
            f"{file.name}: field {field!r} is missing in {len(missing):,} of {len(texts):,} rows "
            f"(the first: row {missing[0] + 1})"
        )
    docs = [text for text in texts if text.strip()]
    if not docs:
        raise DataError(f"{file.name} has no text")
    return docs


def offline_datasets():
    """The `datasets` library, set to read local files only and to print nothing."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # read at import
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors are raised, and said once
    return datasets


# -- the prepared folder --------------------------------------------------------------------------


def read_record(directory: Path, key: str) -> DatasetRecord | None:
    """A folder prepared earlier from the same data (its record, written last, marks it whole)."""
    try:
        record = DatasetRecord.model_validate_json((directory / RECORD).read_text())
    except (OSError, ValueError):  # none, or another version's (pydantic's ValidationError is a ValueError)
        return None
    return record if record.key == key and record.format == FORMAT else None


def write_folder(directory: Path, texts: dict[str, str], record: DatasetRecord) -> None:
    """train.txt, heldout.txt, then the record, into a new folder renamed into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    building = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:12]}.tmp")
    building.mkdir()
    try:
        for part, name in zip(("train", "heldout"), FILES, strict=True):
            (building / name).write_text(texts[part], encoding="utf-8")
        (building / RECORD).write_text(record.model_dump_json(indent=1) + "\n")
        if read_record(directory, record.key) is None:  # another run may have just written it
            shutil.rmtree(directory, ignore_errors=True)  # an unfinished or outdated one
            os.replace(building, directory)
    except OSError:
        if read_record(directory, record.key) is None:  # not another run's finished folder
            raise
    finally:
        shutil.rmtree(building, ignore_errors=True)


def token_counts(directory: Path, teacher: Path) -> dict[str, int]:
    """Each part's tokens in the teacher's tokenizer, as the trainer streams them; cached beside the
    folder by the tokenizer's digest."""
    tokenizer_file = teacher / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise DataError(f"the teacher {teacher} has no tokenizer.json to count its tokens with")
    digest = hashlib.sha256(tokenizer_file.read_bytes()).hexdigest()[:16]
    cached = directory / f"tokens-{digest}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # the tokenizers library raises its own Exception
        raise DataError(f"the teacher's tokenizer.json cannot be read: {one_line(exc)}") from None
    counts = {
        part: count(tokenizer, documents((directory / name).read_text(encoding="utf-8")))
        for part, name in zip(("train", "heldout"), FILES, strict=True)
    }
    with atomic_path(cached) as tmp:
        tmp.write_text(json.dumps(counts) + "\n")
    return counts


def count(tokenizer: Tokenizer, texts: Iterable[str]) -> int:
    return len(token_ids(tokenizer, texts))
