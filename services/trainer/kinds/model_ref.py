"""Which model a job works on: a model directory, a student (a distill job + an architecture), the
winner of a rank job, the output of a finetune job, or an architecture of a teacher's shape from random
weights (finetune only: training from scratch). Evaluate, finetune and export take one.

A student is built from a search result as it is: `architecture` takes a search solution object
unchanged (its `choices`; rank, objective and costs are ignored).
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from services.jobs.context import JobContext
from services.trainer.kinds import inputs
from services.trainer.learning.students import load_student
from shared.errors import invalid
from shared.files import atomic_path
from shared.model import Decoder
from shared.pretrained import read_model
from shared.schemas.operators import Architecture
from shared.schemas.trainer import (
    DirectoryModel,
    FinetunedModel,
    ModelRef,
    RankWinner,
    ScratchModel,
    StudentModel,
)
from shared.settings import Settings

MODEL_DIR = "model"  # a finetune job writes its model as <job dir>/model/


def check_model(
    field: str, ref: ModelRef, settings: Settings, session: Session, sources: set[str]
) -> ModelRef:
    """422 naming the field for a source this job does not take, a path outside the roots, a job that
    has not succeeded, an architecture its distill job cannot build; the ref with its path resolved."""
    if ref.source not in sources:
        raise invalid(f"{field}.source", f"this job takes {', '.join(sorted(sources))}, not {ref.source}")
    match ref:
        case DirectoryModel():
            directory, _ = inputs.model_dir(f"{field}.path", ref.path, settings)
            return ref.model_copy(update={"path": str(directory)})
        case StudentModel():
            distill = inputs.succeeded_job(f"{field}.distill_job", ref.distill_job, "distill", session)
            inputs.learned_architecture(f"{field}.architecture", ref.architecture, distill)
        case RankWinner():
            inputs.succeeded_job(f"{field}.rank_job", ref.rank_job, "rank", session)
        case FinetunedModel():
            inputs.succeeded_job(f"{field}.finetune_job", ref.finetune_job, "finetune", session)
        case ScratchModel():
            directory, shape = inputs.model_dir(f"{field}.teacher", ref.teacher, settings)
            inputs.shaped_architecture(f"{field}.architecture", ref.architecture, shape)
            return ref.model_copy(update={"teacher": str(directory)})
    return ref


@dataclass
class Loaded:
    model: Decoder
    directory: Path  # where its tokenizer (and, for the teacher, its weights) are read from
    teacher: Path  # the teacher it was made from (itself for a plain directory)
    lineage: dict[str, Any] = field(default_factory=dict)  # the jobs that made it
    teacher_model: Decoder | None = None  # the teacher itself, where making the model loaded it

    @property
    def architecture(self) -> Architecture:
        return self.model.architecture


def load_model(ctx: JobContext, ref: ModelRef, device: torch.device) -> Loaded:
    """The referenced model on `device`, in training mode, with where it came from."""
    match ref:
        case DirectoryModel():
            directory = Path(ref.path)
            model = Decoder.from_pretrained(directory)
            return Loaded(model.to(device), directory, _teacher_of(directory), {"directory": str(directory)})
        case StudentModel():
            return _student(ctx, ref.distill_job, ref.architecture, device, {})
        case RankWinner():
            rank = ctx.job(ref.rank_job)
            winner = Architecture.model_validate(rank.result["winner"])
            return _student(ctx, rank.spec["distill_job"], winner, device, {"rank_job": rank.id})
        case FinetunedModel():
            finetune = ctx.job(ref.finetune_job)
            directory = finetune.directory / MODEL_DIR
            model = Decoder.from_pretrained(directory).to(device)
            lineage = {**finetune.result["lineage"], "finetune_job": finetune.id}
            return Loaded(model, directory, Path(finetune.result["teacher"]), lineage)
        case ScratchModel():
            teacher = Path(ref.teacher)
            shape, _ = read_model(teacher)  # the shape alone: no weight of the teacher is read
            model = Decoder(shape, ref.architecture).to(device)  # drawn from the seed the job set
            return Loaded(model, teacher, teacher, {"scratch": str(teacher)})
    raise AssertionError(ref)


def _student(
    ctx: JobContext, distill_ref: str, architecture: Architecture, device: torch.device, lineage: dict
) -> Loaded:
    distill = ctx.job(distill_ref)
    teacher_dir = Path(distill.spec["teacher"])
    teacher = Decoder.from_pretrained(teacher_dir).to(device)
    model = load_student(teacher, distill.directory, architecture)
    return Loaded(model, teacher_dir, teacher_dir, {**lineage, "distill_job": distill.id}, teacher)


def _teacher_of(directory: Path) -> Path:
    """An export names its teacher in provenance.json; any other directory is its own teacher."""
    provenance = directory / "provenance.json"
    if provenance.is_file():
        teacher = json.loads(provenance.read_text()).get("teacher")
        if teacher and Path(teacher).is_dir():
            return Path(teacher)
    return directory


def copy_tokenizer(source: Path, target: Path) -> None:
    """The tokenizer files of a model directory, beside another model's weights."""
    for name in inputs.TOKENIZER_FILES:
        if (source / name).is_file():
            with atomic_path(target / name) as tmp:
                shutil.copyfile(source / name, tmp)
