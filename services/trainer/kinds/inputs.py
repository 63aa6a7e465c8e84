"""The checks job kinds share before a spec is queued: what needs the disk or the database.

Paths must lie inside the configured roots and hold what the job will read, every file it will open
included (no symlink out of the roots); referenced jobs must exist, be of the right kind and have
succeeded; an architecture must fit the teacher and use only candidates its distill job learned.
Each problem is a 422 naming the field. Paths come back resolved (absolute, symlinks followed), which
is what gets stored and run.
"""

from pathlib import Path

from sqlalchemy.orm import Session

from services.trainer.models import QUEUE, Job
from services.trainer.named_teacher import check_named_teacher
from shared.errors import invalid
from shared.files import check_regular
from shared.paths import confine, input_roots
from shared.pretrained import read_model
from shared.schemas.operators import Architecture, is_teacher, spec_name
from shared.schemas.shape import ModelShape
from shared.settings import Settings

BUILTIN_DATASETS = ("shakespeare",)
DATASET_FILES = ("train.txt", "heldout.txt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def inside_roots(field: str, path: str | Path, settings: Settings) -> Path:
    try:
        return confine(path, input_roots(settings))
    except ValueError as exc:
        raise invalid(field, str(exc)) from None


def regular(field: str, file: Path) -> Path:
    try:
        return check_regular(file)
    except ValueError as exc:
        raise invalid(field, str(exc)) from None


def model_dir(
    field: str, path: str, settings: Settings, *, tokenizer: bool = True
) -> tuple[Path, ModelShape]:
    """A Hugging Face model directory: config.json, safetensors weights, (and) tokenizer.json; and the
    model it holds, which every kind taking one checks here alike: its config builds a model we compute
    exactly and its weights' headers match that model (shared/pretrained.py; no tensor is read)."""
    directory = inside_roots(field, path, settings)
    if not directory.is_dir():
        raise invalid(field, f"{path} is not a directory")
    if not (directory / "config.json").is_file():
        raise invalid(field, f"{path} has no config.json (a Hugging Face model directory)")
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        raise invalid(field, f"{path} has no *.safetensors weights (only safetensors are loaded)")
    if tokenizer and not (directory / "tokenizer.json").is_file():
        raise invalid(field, f"{path} has no tokenizer.json (the dataset is tokenised with it)")
    opened = [directory / "config.json", *weights, *(directory / n for n in TOKENIZER_FILES)]
    for file in opened:
        if file.exists():
            inside_roots(field, file, settings)  # a file that links out of the roots is refused
            regular(field, file)  # a FIFO would block the worker that opens it, for good
    check_named_teacher(field, directory, settings)
    return directory, model_shape(field, directory)


def model_shape(field: str, directory: Path) -> ModelShape:
    try:
        shape, _ = read_model(directory)
    except ValueError as exc:
        raise invalid(field, f"not a model the trainer loads: {exc}") from None
    return shape


def dataset(field: str, value: str, settings: Settings) -> str:
    if value in BUILTIN_DATASETS:
        return value
    directory = inside_roots(field, value, settings)
    missing = [name for name in DATASET_FILES if not (directory / name).is_file()]
    if missing:
        raise invalid(field, f"{value} lacks {', '.join(missing)}")
    for name in DATASET_FILES:
        inside_roots(field, directory / name, settings)
    return str(directory)


def succeeded_job(field: str, job_id: str, kind: str, session: Session) -> Job:
    job = QUEUE.get(session, job_id=job_id)
    if job is None or job.kind != kind:
        raise invalid(field, f"no {kind} job {job_id!r}")
    if job.state != "succeeded":
        raise invalid(field, f"the {kind} job is {job.state}, not succeeded")
    return job


def shaped_architecture(field: str, architecture: Architecture, shape: ModelShape) -> Architecture:
    """An architecture of the teacher's blocks: one choice for every slot, no more."""
    try:
        architecture.check_shape(shape)
    except ValueError as exc:
        slot = str(exc).split(":", 1)[0]
        raise invalid(f"{field}.choices.{slot}", str(exc)) from None
    return architecture


def learned_architecture(field: str, architecture: Architecture, distill: Job) -> Architecture:
    """An architecture its distill job can build: every slot of the teacher, each choice the teacher's
    own operator, identity, or a candidate the job learned for that slot."""
    shape = model_shape(field, Path(distill.spec["teacher"]))
    shaped_architecture(field, architecture, shape)
    learned = distill.result["operators"]
    for slot, slot_type, operator in architecture.slots():
        if operator.kind == "identity" or is_teacher(operator, shape, slot_type):
            continue
        if spec_name(operator) not in learned.get(slot, {}):
            raise invalid(
                f"{field}.choices.{slot}",
                f"the distill job did not learn {spec_name(operator)} for {slot} "
                f"(it learned: {', '.join(learned.get(slot, {})) or 'nothing'})",
            )
    return architecture
