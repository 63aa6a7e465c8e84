"""Refusing at submission a trainer job that cannot fit the trainer's device memory.

Rough on purpose, like the profiler's limits (services/profiler/limits.py): it tells a job that fits
from one that cannot by orders of magnitude (seq_len 131072 x batch_size 4096), not a tight bound.
Each kind's spec declares its footprint (batch, sequence length, training or not); the model is the
student the spec names (a student, a rank job's winner, a finetuned model), a directory's as its
config.json describes it (a teacher, an export), or else the teacher (a distill, score or rank job);
shared/costs.py's job_memory_bytes counts the rest, all in float32.

The device is the trainer's (UNAST_TRAINER_DEVICE): this machine's memory for `cpu`; a CUDA device's,
asked once of a short-lived process so that the API holds no GPU context. A job may plan on
MEMORY_SHARE of it.
"""

import functools
import logging
import os
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.trainer.models import QUEUE
from shared.costs import MEMORY_SHARE, job_memory_bytes
from shared.errors import ApiError
from shared.pretrained import read_config
from shared.schemas.operators import Architecture
from shared.schemas.shape import ModelShape
from shared.schemas.trainer import (
    DirectoryModel,
    DistillSpec,
    EvaluateSpec,
    ExportSpec,
    FinetunedModel,
    FinetuneResult,
    FinetuneSpec,
    JobSpec,
    ModelRef,
    RankResult,
    RankSpec,
    RankWinner,
    ScoreSpec,
    ScratchModel,
    StudentModel,
)
from shared.settings import Settings

log = logging.getLogger("unast.trainer.memory")


def device_memory_bytes(device: str) -> int | None:
    """Memory of the trainer's device, or None when it cannot be told (the check is then skipped)."""
    if device == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return _cuda_memory_bytes(int(device.partition(":")[2] or 0))


@functools.cache
def _cuda_memory_bytes(index: int) -> int | None:
    code = f"import torch; print(torch.cuda.get_device_properties({index}).total_memory)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return int(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        log.warning("cannot tell the memory of cuda:%d; trainer jobs are not checked against it", index)
        return None


def check_memory(spec: JobSpec, settings: Settings, session: Session) -> None:
    """422 naming batch_size and seq_len when the job would not fit the trainer's device. Runs after the
    kind's own check, so paths are resolved and referenced jobs have succeeded."""
    footprint = spec.footprint()
    model = job_model(spec, session)
    available = device_memory_bytes(settings.trainer_device)
    if model is None or available is None:
        return
    shape, architecture = model
    parts = job_memory_bytes(architecture, shape, **footprint._asdict())
    need, offered = sum(parts.values()), available * MEMORY_SHARE
    if need <= offered:
        return
    breakdown = ", ".join(f"{_gib(v)} of {k}" for k, v in parts.items())
    message = (
        f"the job needs about {_gib(need)} ({breakdown}); the trainer's device ({settings.trainer_device}) "
        f"offers {_gib(offered)}: use a smaller batch_size or seq_len"
    )
    details = [{"field": f"body.{name}", "message": message} for name in ("batch_size", "seq_len")]
    raise ApiError(422, f"body.batch_size, body.seq_len: {message}", details=details)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


Model = tuple[ModelShape, Architecture]  # the teacher's shape, and the architecture made from it


def job_model(spec: JobSpec, session: Session) -> Model | None:
    """The model a job holds, sized as the module's docstring says; None when it cannot be told."""
    try:
        match spec:
            case DistillSpec():
                return _directory(spec.teacher)
            case ScoreSpec() | RankSpec():
                return _distilled(spec.distill_job, session)
            case EvaluateSpec() | FinetuneSpec() | ExportSpec():
                return _referenced(spec.model, session)
    except ValidationError:  # a stored job that does not read as its kind's models
        return None
    raise TypeError(f"{type(spec).__name__}: the memory check does not know which model it holds")


def _referenced(ref: ModelRef, session: Session) -> Model | None:
    """The kind's check has made sure that every job a reference names has succeeded."""
    match ref:
        case DirectoryModel():
            return _directory(ref.path)
        case StudentModel():
            return _student(_distilled(ref.distill_job, session), ref.architecture)
        case RankWinner():
            rank = QUEUE.get(session, job_id=ref.rank_job)
            distill_job = RankSpec.model_validate(rank.spec).distill_job
            return _student(_distilled(distill_job, session), RankResult.model_validate(rank.result).winner)
        case FinetunedModel():
            result = FinetuneResult.model_validate(QUEUE.get(session, job_id=ref.finetune_job).result)
            return _student(_directory(result.teacher), result.architecture)
        case ScratchModel():
            return _student(_directory(ref.teacher), ref.architecture)
    raise AssertionError(ref)


def _distilled(distill_job: str, session: Session) -> Model | None:
    """A distill job's teacher."""
    return _directory(DistillSpec.model_validate(QUEUE.get(session, job_id=distill_job).spec).teacher)


def _student(teacher: Model | None, architecture: Architecture) -> Model | None:
    return None if teacher is None else (teacher[0], architecture)


def _directory(directory: str) -> Model | None:
    """The model a directory's config.json describes (an export's own architecture, a teacher's)."""
    try:
        return read_config(Path(directory))
    except ValueError:
        return None
