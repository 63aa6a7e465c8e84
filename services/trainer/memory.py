"""A trainer job's plan (shared/plan.py: peak memory per process, FLOPs) from its spec, and the
refusal at submission of a job that cannot fit the trainer's device on the processes a worker runs
it as (UNAST_TRAINER_PROCS_PER_JOB for the distributed kinds), naming how many would do.

The model is the student the spec names (a student, a rank job's winner, a finetuned model), a
directory's as its config.json describes it (a teacher, an export), or else the teacher (a distill,
score or rank job); a distill job's candidates are its spec's or the default pool, a score job's
its distill job's.

The device is the trainer's (UNAST_TRAINER_DEVICE; shared/device_capacity.py); a job may plan on
MEMORY_SHARE of its memory.
"""

from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.orm import Session

from services.trainer.kinds import KINDS
from services.trainer.models import QUEUE
from shared import plan
from shared.candidates import slot_pools
from shared.costs import MEMORY_SHARE, job_memory_bytes, parameters
from shared.device_capacity import device_flops, device_memory_bytes
from shared.errors import ApiError
from shared.pretrained import read_config
from shared.schemas.operators import Architecture, OperatorSpec
from shared.schemas.shape import ModelShape
from shared.schemas.trainer import (
    DirectoryModel,
    DistillSpec,
    EvaluateSpec,
    ExportSpec,
    FinetunedModel,
    FinetuneResult,
    FinetuneSpec,
    JobPlan,
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

OPERATORS = TypeAdapter(dict[str, dict[str, OperatorSpec]])  # a distill job's candidates, by slot and id


def job_plan(spec: JobSpec, session: Session, processes: int) -> plan.StagePlan | None:
    """The planner's figures (shared/plan.py) for a job on `processes` processes; None when its model
    cannot be told. Runs after the kind's own check: paths are resolved, referenced jobs succeeded."""
    footprint = spec.footprint()
    figures = {"batch_size": footprint.batch_size, "seq_len": footprint.seq_len}
    try:
        match spec:
            case DistillSpec():
                if (model := _directory(spec.teacher)) is None:
                    return None
                shape = model[0]
                candidates = spec.candidates or slot_pools(shape, "default", spec.format)
                return plan.distill(shape, candidates, steps=spec.steps, processes=processes, **figures)
            case ScoreSpec():
                distill = QUEUE.get(session, job_id=spec.distill_job)
                if (model := _distilled(spec.distill_job, session)) is None:
                    return None
                operators = OPERATORS.validate_python((distill.result or {}).get("operators", {}))
                candidates = {slot: list(ops.values()) for slot, ops in operators.items()}
                batches = spec.eval_batches
                return plan.score(model[0], candidates, batches=batches, processes=processes, **figures)
            case RankSpec():
                if (model := _distilled(spec.distill_job, session)) is None:
                    return None
                largest = max(spec.architectures, key=lambda a: parameters(a, model[0]))
                return plan.finetune(
                    model[0],
                    largest,
                    steps=spec.steps,
                    kd=spec.loss != "lm",
                    processes=processes,
                    kind="rank",
                    architectures=len(spec.architectures),
                    **figures,
                )
            case FinetuneSpec():
                if (model := _referenced(spec.model, session)) is None:
                    return None
                kd = spec.loss != "lm"
                return plan.finetune(*model, steps=spec.steps, kd=kd, processes=processes, **figures)
            case EvaluateSpec() | ExportSpec():
                if (model := _referenced(spec.model, session)) is None:
                    return None
                parts = job_memory_bytes(model[1], model[0], **footprint._asdict())
                return plan.StagePlan(spec.kind, 1, parts | {"runtime": plan.RUNTIME_BYTES}, 0.0)
    except ValidationError:  # a stored job that does not read as its kind's models
        return None
    raise TypeError(f"{type(spec).__name__}: the planner does not know the job")


def processes_for(spec: JobSpec, settings: Settings) -> int:
    """How many processes a worker runs this job as."""
    return settings.trainer_procs_per_job if KINDS[spec.kind].distributed else 1


def plan_job(spec: JobSpec, settings: Settings, session: Session, timed: bool = False) -> JobPlan | None:
    """The job's plan on the processes a worker runs it as, against the trainer's device (with the
    expected time when `timed`: that measures the device once); None when its model cannot be told."""
    processes = processes_for(spec, settings)
    try:
        stage = job_plan(spec, session, processes)
    except plan.TooManyProcesses as error:  # the worker's processes, not the body, are too many
        message = f"the trainer runs a {spec.kind} job as {processes} processes, a slot or more each: {error}"
        details = [{"field": "body.teacher", "message": message}]
        raise ApiError(422, f"body.teacher: {message}", details=details) from None
    if stage is None:
        return None
    available = device_memory_bytes(settings.trainer_device)
    fits = needed = None
    if available is not None:
        fits = stage.peak_bytes <= available * MEMORY_SHARE
        if KINDS[spec.kind].distributed:
            needed = plan.ranks_needed(lambda n: job_plan(spec, session, n), available * MEMORY_SHARE)
    rate = device_flops(settings.trainer_device, settings.torch_threads) if timed else None
    return JobPlan(
        kind=spec.kind,
        processes=processes,
        peak_bytes=stage.peak_bytes,
        memory=stage.memory,
        flops=stage.flops,
        device=settings.trainer_device,
        device_memory_bytes=available,
        fits=fits,
        processes_needed=needed,
        device_flops=rate,
        seconds=None if rate is None else stage.flops / (rate * plan.UTILISATION),
    )


def check_memory(spec: JobSpec, settings: Settings, session: Session) -> None:
    """422 naming batch_size and seq_len, with the processes that would make it fit, when the job would
    not fit the trainer's device on the processes a worker runs it as."""
    job = plan_job(spec, settings, session)
    if job is None or job.fits is not False:
        return
    offered = job.device_memory_bytes * MEMORY_SHARE
    breakdown = ", ".join(f"{_gib(v)} of {k}" for k, v in job.memory.items())
    advice = "use a smaller batch_size or seq_len"
    if job.processes_needed is not None:
        n = job.processes_needed
        advice = f"it fits on {n} processes (UNAST_TRAINER_PROCS_PER_JOB={n}, one device each); or {advice}"
    message = (
        f"the job needs about {_gib(job.peak_bytes)} per process on {job.processes} ({breakdown}); the "
        f"trainer's device ({job.device}) offers {_gib(offered)}: {advice}"
    )
    details = [{"field": f"body.{name}", "message": message} for name in ("batch_size", "seq_len")]
    raise ApiError(422, f"body.batch_size, body.seq_len: {message}", details=details)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


Model = tuple[ModelShape, Architecture]  # the teacher's shape, and the architecture made from it


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
