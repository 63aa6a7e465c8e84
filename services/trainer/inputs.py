"""The second check of a submitted spec, before it is queued: what needs the disk or the database.

Paths must lie inside the configured roots and hold what the job will read; referenced jobs must
exist and have succeeded. Each problem is a 422 naming the field. Returns the spec with its paths
resolved (absolute, symlinks followed), which is what gets stored and run.
"""

from pathlib import Path

from sqlalchemy.orm import Session

from services.trainer.jobs import get_job
from services.trainer.paths import confine, input_roots
from shared.errors import invalid
from shared.schemas.jobs import DistillSpec, JobSpec, ScoreSpec
from shared.settings import Settings

BUILTIN_DATASETS = ("shakespeare",)
DATASET_FILES = ("train.txt", "heldout.txt")


def check_inputs(spec: JobSpec, settings: Settings, session: Session) -> JobSpec:
    match spec:
        case DistillSpec():
            teacher = _teacher(spec.teacher, settings)
            # Checks that need the teacher's shape (slot ids within its layers, operator sizes it can
            # inherit from) belong here, once the distill job is written: read config.json, then
            # raise invalid("body.candidates", ...).
            return spec.model_copy(
                update={"teacher": str(teacher), "dataset": _dataset(spec.dataset, settings)}
            )
        case ScoreSpec():
            distill = get_job(session, job_id=spec.distill_job)
            if distill is None or distill.kind != "distill":
                raise invalid("body.distill_job", f"no distill job {spec.distill_job!r}")
            if distill.state != "succeeded":
                raise invalid("body.distill_job", f"the distill job is {distill.state}, not succeeded")
            return spec.model_copy(update={"dataset": _dataset(spec.dataset, settings)})
    raise AssertionError(f"no input checks for {type(spec).__name__}")


def _inside_roots(field: str, path: str, settings: Settings) -> Path:
    try:
        return confine(path, input_roots(settings))
    except ValueError as exc:
        raise invalid(field, str(exc)) from None


def _teacher(path: str, settings: Settings) -> Path:
    directory = _inside_roots("body.teacher", path, settings)
    if not directory.is_dir():
        raise invalid("body.teacher", f"{path} is not a directory")
    if not (directory / "config.json").is_file():
        raise invalid("body.teacher", f"{path} has no config.json (a Hugging Face model directory)")
    if not any(directory.glob("*.safetensors")):
        raise invalid("body.teacher", f"{path} has no *.safetensors weights (only safetensors are loaded)")
    return directory


def _dataset(dataset: str, settings: Settings) -> str:
    if dataset in BUILTIN_DATASETS:
        return dataset
    directory = _inside_roots("body.dataset", dataset, settings)
    missing = [name for name in DATASET_FILES if not (directory / name).is_file()]
    if missing:
        raise invalid("body.dataset", f"{dataset} lacks {', '.join(missing)}")
    return str(directory)
