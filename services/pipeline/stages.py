"""The stages of a run, each driving the services over REST and recording what it did.

Every stage is keyed by its inputs (record.py). Trainer jobs carry the run's id and that key as their
Idempotency-Key (with an attempt number: a job that failed or was cancelled is submitted again under a
new one), so a run started again finds its jobs instead of making new ones, and two runs never share
one (a stopped run cancels only its own); a recorded job that is still queued or running is waited
for. The profiler's LUT is found by its key (device, shape, regime, batch, length,
dtype) before one is built.
"""

import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel

from services.pipeline.configs import Config
from services.pipeline.data import Prepared, with_dataset
from services.pipeline.progress import Reporter, StageProgress
from services.pipeline.record import RunRecord, digest
from services.pipeline.stack import Services
from services.pipeline.targets import Target
from shared import decilm
from shared.candidates import merged, slot_pools
from shared.clients.base import ServiceError
from shared.clients.jobs import JobsClient
from shared.clients.profiler import ProfilerClient
from shared.schemas.jobs import Job
from shared.schemas.lut import (
    BuildRequest,
    CostTable,
    Dtype,
    Lut,
    LutKey,
    ThisDevice,
    Validation,
    ValidationRequest,
)
from shared.schemas.operators import Architecture, OperatorSpec, operator_from_name, spec_name
from shared.schemas.scores import ScoreTable
from shared.schemas.search import Budget, Candidate, SearchRequest, SearchResponse, Slot, Unreachable
from shared.schemas.shape import ModelShape
from shared.schemas.trainer import DistillResult, DistillSpec, JobSpec, ScoreSpec

POLL_S = 1.0


class PipelineError(RuntimeError):
    """A stage could not go on; the message says why, and the run can be started again."""


class Stopped(Exception):
    """SIGINT or SIGTERM: the running job is cancelled and the run left resumable."""


@dataclass
class Run:
    services: Services
    record: RunRecord
    config: Config
    reporter: Reporter
    teacher: Path  # the model directory, as the trainer and the profiler read it
    shape: ModelShape
    budgets: list[Budget]
    device_kind: str
    out: Path
    dtype: Dtype = "float32"  # the LUT's: the teacher's own unless --dtype says otherwise
    format: decilm.Format = "unast"  # --format: nemotron-nas keeps every method to the servable pool
    targets: list[Target] = field(default_factory=list)  # the LUTs the budgets need, the run's own first
    data: Prepared | None = None  # --data, prepared (data.py); None: the built-in corpus
    uniform: Architecture | None = None  # the uniform baseline's choice, distilled beside the pools
    stopping: bool = False

    @cached_property
    def pools(self) -> dict[str, dict[str, list[OperatorSpec]]]:
        """Per format, every slot's candidates a search in that format draws from (the configuration's
        pool, shared/candidates.py): the run's format, and in the default one the servable pool beside
        it when the teacher's family fits the nemotron-nas form (the report's servable row)."""
        pools = {self.format: slot_pools(self.shape, self.config.pool, self.format)}
        servable_row = self.format == "unast" and self.config.nemotron_nas_row
        if servable_row and decilm.family_problem(self.shape) is None:
            pools["nemotron-nas"] = slot_pools(self.shape, self.config.pool, "nemotron-nas")
        return pools

    @property
    def candidates(self) -> dict[str, list[OperatorSpec]]:
        """Every slot's candidates the distill job learns: the pools of every format and the uniform
        baseline's choice, joined."""
        uniform = {}
        if self.uniform is not None:
            uniform = {slot: [operator_from_name(c)] for slot, c in self.uniform.choices.items()}
        return merged(*self.pools.values(), uniform)

    def check_stop(self) -> None:
        if self.stopping:
            raise Stopped()


def install_stop_handlers(run: Run) -> None:
    def stop(signum, _frame):
        run.stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


# -- waiting for jobs -----------------------------------------------------------------------------


def following(
    run: Run, bar: StageProgress, client: JobsClient, share: tuple[float, float] = (0.0, 1.0)
) -> Callable[[Job], None]:
    """What a wait does at each poll: move the stage's bar (over its `share`: start, span); on SIGINT
    or SIGTERM, cancel the job (the run stays resumable: a cancelled job is submitted again) and stop."""

    def on_progress(job: Job) -> None:
        run.services.check()  # the embedded stack gave up on a process: no job would end
        if run.stopping:
            with contextlib.suppress(ServiceError):  # it finished in between
                client.cancel(job.id)
            raise Stopped()
        bar.update(share[0] + share[1] * job.progress, f"{job.state}: {job.message}", job.eta_s)

    return on_progress


def spent(job: Job) -> bool:
    """A recorded job that will not succeed (a stopped run cancels its job): submit the work again."""
    return job.state in ("failed", "cancelled") or job.cancel_requested


def wait_trainer(run: Run, stage: str, job_id: str, *, share: tuple[float, float] = (0.0, 1.0)) -> BaseModel:
    """Wait for a trainer job, moving the stage's bar; its kind's result, or PipelineError."""
    trainer = run.services.trainer
    with run.reporter.stage(stage) as bar:
        job = trainer.wait(job_id, following(run, bar, trainer, share), poll_s=POLL_S)
        if job.state != "succeeded":
            lines = [line.message for line in trainer.log(job_id, tail=8).lines]
            raise PipelineError(
                f"{stage}: trainer job {job_id} {job.state}: {job.error}\n" + "\n".join(lines)
            )
        bar.done(f"job {job_id} succeeded")
    return trainer.result(job_id)


def trainer_job(
    run: Run, stage: str, spec: JobSpec, *, share: tuple[float, float] = (0.0, 1.0)
) -> tuple[str, BaseModel]:
    """Submit a job (or find the one an earlier run submitted) and wait for it: (job id, its kind's
    result). The stage is finished with the job's id; a stage already finished with these inputs is
    not entered."""
    spec = with_dataset(spec, run.data)  # every job of the run reads the run's data
    key = digest(stage, spec)
    if (done := run.record.reusable(stage, key)) is not None:
        return done.job_id, run.services.trainer.result(done.job_id)
    record = run.record.stage(stage)
    attempt = record.attempt if record.key == key else 0
    job_id = record.job_id if record.key == key else None
    if job_id is not None:
        job = run.services.trainer.job(job_id)
        if spent(job):
            attempt += 1  # that key is spent (a stopped run cancels its job): the same spec, a new key
            job_id = None
    run.record.start(stage, key)
    if job_id is None:
        job = run.services.trainer.submit(
            spec, idempotency_key=f"unast-{run.record.data.run_id}-{stage}-{key}-{attempt}"
        )
        job_id = job.id
    run.record.update(stage, job_id=job_id, attempt=attempt)
    result = wait_trainer(run, stage, job_id, share=share)
    run.record.finish(stage, job_id=job_id)
    return job_id, result


def profiler_of(run: Run, device: str = "") -> ProfilerClient:
    """The profiler of a target's device: the stack's, or one that --target names."""
    return run.services.devices[device] if device else run.services.profiler


def wait_profiler(run: Run, stage: str, job_id: str, device: str = "") -> Job:
    """Wait for a profiler job (a build or a validation) of a device, moving the stage's bar; the
    succeeded job, or PipelineError."""
    profiler = profiler_of(run, device)
    with run.reporter.stage(stage) as bar:
        job = profiler.wait(job_id, following(run, bar, profiler), poll_s=POLL_S)
        if job.state != "succeeded":
            raise PipelineError(f"{stage}: profiler job {job_id} {job.state}: {job.error}")
        bar.done(f"job {job_id} succeeded")
    return job


# -- the stages -----------------------------------------------------------------------------------


def device(run: Run) -> ThisDevice:
    this = run.services.profiler.this_device()
    if this.kind != run.device_kind.split(":")[0]:
        raise PipelineError(
            f"the profiler at {run.services.urls['profiler']} measures {this.name} ({this.kind}), "
            f"not a {run.device_kind} device"
        )
    return this


def profile(run: Run, target: Target) -> Lut:
    """The device's LUT for the teacher's shape in the target's regime, batch and length: an existing
    one of the same key, or a new build; for the run's own LUT, then a validation of random
    architectures (how well it predicts whole models). Recorded as `profile` (`profile-<target>`)."""
    stage = f"profile-{target.name}" if target.name else "profile"
    profiler = profiler_of(run, target.device)
    this = profiler.this_device() if target.device else device(run)
    request = BuildRequest(
        shape=str(run.teacher),
        regime=target.regime,
        batch=target.batch,
        length=target.length,
        dtype=run.dtype,
        time_cap_s=run.config.lut_time_cap_s,
    )
    key = request.model_dump(mode="json", include=set(LutKey.model_fields))  # the LUT's key, as named
    stage_key = digest(stage, key, this.key, run.config.lut_time_cap_s)
    if (done := run.record.reusable(stage, stage_key)) is not None:
        return profiler.lut(done.lut_id)
    run.record.start(stage, stage_key)
    found = (
        [
            s
            for s in profiler.luts(device_id=this.id, shape=str(run.teacher), length=target.length)
            if (s.regime, s.batch, s.dtype) == (target.regime, target.batch, run.dtype)
        ]
        if this.id is not None
        else []
    )
    if found:
        lut = profiler.lut(found[0].id)
        run.reporter.line(
            f"[{stage}] reusing LUT {lut.id} of {this.name}, measured {lut.measured_at:%Y-%m-%d %H:%M}"
        )
    else:
        job_id = run.record.stage(stage).job_id
        if job_id is None or spent(profiler.job(job_id)):
            job_id = profiler.build_lut(request).id
            run.record.update(stage, job_id=job_id)
        wait_profiler(run, stage, job_id, target.device)
        lut = profiler.lut(profiler.build_result(job_id).lut_id)
    check = None
    if not target.name:
        check = validate(run, "lut-check", lut, ValidationRequest(count=run.config.validation_count, seed=1))
    run.record.finish(
        stage,
        lut_id=lut.id,
        device_id=lut.device_id,
        device=this.name,
        drift=lut.drift,
        stable=lut.stable,
        validation_id=check.id if check else None,
        dtype_note=slow_dtype(this, run.dtype),
    )
    return lut


def slow_dtype(this: ThisDevice, dtype: Dtype) -> str | None:
    """A line for the report when the device computes `dtype` slower than float32 (a CPU without fast
    bfloat16 or float16 kernels): its LUT then times a slow path, not what this dtype is for."""
    rate, full = this.gflops.get(dtype), this.gflops.get("float32")
    if dtype == "float32" or rate is None or full is None or rate >= full:
        return None
    return (
        f"{this.name} multiplies {dtype} matrices at {rate:.0f} GFLOP/s against {full:.0f} in float32: "
        f"it has no fast {dtype}, so the {dtype} LUT times a slow path"
    )


def validate(run: Run, stage: str, lut: Lut, request: ValidationRequest, device: str = "") -> Validation:
    """A validation of the LUT (random architectures, or given ones) by its device's profiler, recorded
    under `stage`."""
    key = digest(stage, lut.id, lut.measured_at, request.model_dump(mode="json", exclude_unset=True))
    profiler = profiler_of(run, device)
    if (done := run.record.reusable(stage, key)) is not None:
        return profiler.validation(done.validation_id)
    run.record.start(stage, key)
    job_id = run.record.stage(stage).job_id
    if job_id is None or spent(profiler.job(job_id)):
        timed = request.model_copy(update={"time_cap_s": max(5.0, run.config.lut_time_cap_s / 2)})
        job_id = profiler.validate_lut(lut.id, timed).id
        run.record.update(stage, job_id=job_id)
    wait_profiler(run, stage, job_id, device)
    done = profiler.validation(profiler.validation_result(job_id).validation_id)
    run.record.finish(
        stage,
        validation_id=done.id,
        median_abs_error=done.median_abs_error,
        max_abs_error=done.max_abs_error,
        drift=done.drift,
    )
    return done


def distill(run: Run) -> tuple[str, DistillResult]:
    # the trainer's own default pool for the format goes unnamed: the spec names any other
    default = run.candidates == slot_pools(run.shape, "default", run.format)
    spec = DistillSpec(
        teacher=str(run.teacher),
        format=run.format,
        candidates=None if default else run.candidates,
        steps=run.config.distill_steps,
        batch_size=run.config.distill_batch,
        seq_len=run.config.seq_len,
        warmup=max(1, run.config.distill_steps // 20),
        eval_batches=8,
        checkpoint_every=max(10, run.config.distill_steps // 10),
    )
    return trainer_job(run, "distill", spec)


def score(run: Run, distill_job: str) -> ScoreTable:
    spec = ScoreSpec(
        distill_job=distill_job,
        batch_size=run.config.batch,
        seq_len=run.config.seq_len,
        eval_batches=run.config.score_batches,
        checkpoint_every=4,
    )
    _, table = trainer_job(run, "score", spec)
    run.record.update(
        "score",
        teacher_loss=table.teacher_loss,
        tokens=table.tokens,
        rank_stability=table.rank_stability,
    )
    return table


def search(run: Run, stage: str, request: SearchRequest) -> SearchResponse:
    """The search (stateless and quick: asked again on every run, its answer recorded)."""
    run.check_stop()
    run.record.start(stage, digest(stage, request))
    with run.reporter.stage(stage) as bar:
        bar.update(0.0, f"K={request.k}")
        try:
            found = run.services.search.search(request)
        except ServiceError as exc:
            if exc.code == "infeasible":
                least = "; ".join(
                    f"{u.cost} at least {u.min_achievable:.6g} (budget {u.max:.6g})"
                    for u in map(Unreachable.model_validate, exc.details)
                )
                raise PipelineError(f"no architecture meets the budgets: {least}") from None
            raise
        bar.done(f"{len(found.solutions)} architecture(s), {found.status}: {found.message}")
    run.record.finish(stage, status=found.status, solutions=len(found.solutions))
    return found


def feasible(run: Run, costs: CostTable) -> None:
    """Before any training: can any architecture of the run's pool meet the budgets? (scores all 0)"""
    learned = {slot: {spec_name(op) for op in ops} for slot, ops in run.pools[run.format].items()}
    slots = [
        Slot(
            id=s.id,
            candidates=[
                Candidate(id=c.id, score=0.0, costs=c.costs, reference=c.reference)
                for c in s.candidates
                if c.id in learned[s.id]  # only what the distill job will learn
            ],
        )
        for s in costs.slots
    ]
    request = SearchRequest(
        slots=slots,
        fixed=costs.fixed,
        peak_costs=costs.peak_costs,
        derived_costs=costs.derived_costs,
        budgets=run.budgets,
        k=1,
        time_limit_s=30,
        format=run.format,
    )
    search(run, "budget-check", request)
