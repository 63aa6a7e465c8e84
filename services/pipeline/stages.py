"""The stages of a run, each driving the services over REST and recording what it did.

Every stage is keyed by its inputs (record.py). Trainer jobs carry that key as their Idempotency-Key
(with an attempt number: a job that failed or was cancelled is submitted again under a new one), so a
run started again finds its jobs instead of making new ones; a recorded job that is still queued or
running is waited for. The profiler's LUT is found by its key (device, shape, regime, batch, length,
dtype) before one is built.
"""

import contextlib
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.pipeline.configs import Config, pool
from services.pipeline.progress import Reporter
from services.pipeline.record import RunRecord, digest
from services.pipeline.stack import Services
from shared.clients.base import ServiceError
from shared.schemas.lut import CostTable, Lut, ThisDevice
from shared.schemas.operators import spec_name
from shared.schemas.scores import ScoreTable
from shared.schemas.search import Budget, SearchResponse
from shared.schemas.shape import ModelShape

POLL_S = 1.0
FINISHED = ("succeeded", "failed", "cancelled")


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
    stopping: bool = False
    state: dict[str, Any] = field(default_factory=dict)  # results passed between stages in this process

    def check_stop(self) -> None:
        if self.stopping:
            raise Stopped()


def install_stop_handlers(run: Run) -> None:
    def stop(signum, _frame):
        run.stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


# -- waiting for jobs -----------------------------------------------------------------------------


def wait_trainer(run: Run, stage: str, job_id: str, *, share: tuple[float, float] = (0.0, 1.0)) -> dict:
    """Poll a trainer job to its end, moving the stage's bar; its result, or PipelineError."""
    trainer = run.services.trainer
    with run.reporter.stage(stage) as bar:
        while True:
            if run.stopping:
                with contextlib.suppress(ServiceError):  # it finished in between
                    trainer.cancel(job_id)
                raise Stopped()
            job = trainer.job(job_id)
            bar.update(share[0] + share[1] * job.progress, f"{job.state}: {job.message}", job.eta_s)
            if job.state in FINISHED:
                break
            time.sleep(POLL_S)
        if job.state != "succeeded":
            lines = [line.message for line in trainer.log(job_id, tail=8).lines]
            raise PipelineError(
                f"{stage}: trainer job {job_id} {job.state}: {job.error}\n" + "\n".join(lines)
            )
        bar.done(f"job {job_id} succeeded")
    return trainer.result(job_id).result


def trainer_job(
    run: Run, stage: str, spec: dict, *, share: tuple[float, float] = (0.0, 1.0)
) -> tuple[str, dict]:
    """Submit a job (or find the one an earlier run submitted) and wait for it: (job id, result). The
    stage is finished with the job's id; a stage already finished with these inputs is not entered."""
    key = digest(stage, spec)
    if (done := run.record.reusable(stage, key)) is not None:
        return done["job_id"], run.services.trainer.result(done["job_id"]).result
    record = run.record.stage(stage)
    attempt = record.get("attempt", 0) if record.get("key") == key else 0
    job_id = record.get("job_id") if record.get("key") == key else None
    if job_id is not None:
        job = run.services.trainer.job(job_id)
        if job.state in ("failed", "cancelled") or job.cancel_requested:
            attempt += 1  # that key is spent (a stopped run cancels its job): the same spec, a new key
            job_id = None
    run.record.start(stage, key)
    if job_id is None:
        job = run.services.trainer.submit(spec, idempotency_key=f"unast-{stage}-{key}-{attempt}")
        job_id = job.id
    run.record.update(stage, job_id=job_id, attempt=attempt)
    result = wait_trainer(run, stage, job_id, share=share)
    run.record.finish(stage, job_id=job_id)
    return job_id, result


def wait_profiler(run: Run, stage: str, job_id: str) -> Any:
    profiler = run.services.profiler
    with run.reporter.stage(stage) as bar:
        while True:
            run.check_stop()  # a profiler job cannot be cancelled: it is left to finish for a later run
            job = profiler.job(job_id)
            bar.update(job.progress, f"{job.state}: {job.message}", job.eta_s)
            if job.state in FINISHED:
                break
            time.sleep(POLL_S)
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


def profile(run: Run) -> Lut:
    """The device's LUT for the teacher's shape: an existing one of the same key, or a new build;
    then a validation of random architectures (how well it predicts whole models)."""
    this = device(run)
    key = {
        "shape": str(run.teacher),
        "regime": "prefill",
        "batch": 1,
        "length": run.config.length,
        "dtype": "float32",
    }
    stage_key = digest("profile", key, this.key, run.config.lut_time_cap_s)
    profiler = run.services.profiler
    if (done := run.record.reusable("profile", stage_key)) is not None:
        return profiler.lut(done["lut_id"])
    run.record.start("profile", stage_key)
    found = (
        [
            s
            for s in profiler.luts(device_id=this.id, shape=str(run.teacher), length=run.config.length)
            if s.regime == "prefill" and s.batch == 1 and s.dtype == "float32"
        ]
        if this.id is not None
        else []
    )
    if found:
        lut = profiler.lut(found[0].id)
        run.reporter.line(
            f"[profile] reusing LUT {lut.id} of {this.name}, measured {lut.measured_at:%Y-%m-%d %H:%M}"
        )
    else:
        job_id = run.record.stage("profile").get("job_id")
        if job_id is None or profiler.job(job_id).state in ("failed", "cancelled"):
            body = {**key, "time_cap_s": run.config.lut_time_cap_s}
            job_id = profiler.request("POST", "/v1/luts", json=body)["id"]
            run.record.update("profile", job_id=job_id)
        lut = profiler.lut(wait_profiler(run, "profile", job_id).lut_id)
    validation = validate(run, "lut-check", lut, {"count": run.config.validation_count, "seed": 1})
    run.record.finish(
        "profile",
        lut_id=lut.id,
        device_id=lut.device_id,
        device=this.name,
        drift=lut.drift,
        stable=lut.stable,
        validation_id=validation["id"],
    )
    return lut


def validate(run: Run, stage: str, lut: Lut, body: dict) -> dict:
    """A validation of the LUT (random architectures, or given ones), recorded under `stage`."""
    key = digest(stage, lut.id, lut.measured_at, body)
    if (done := run.record.reusable(stage, key)) is not None:
        return run.services.profiler.validation(done["validation_id"]).model_dump(mode="json")
    run.record.start(stage, key)
    job_id = run.record.stage(stage).get("job_id")
    profiler = run.services.profiler
    if job_id is None or profiler.job(job_id).state in ("failed", "cancelled"):
        body = {**body, "time_cap_s": max(5.0, run.config.lut_time_cap_s / 2)}
        job_id = profiler.request("POST", f"/v1/luts/{lut.id}/validations", json=body)["id"]
        run.record.update(stage, job_id=job_id)
    validation = profiler.validation(wait_profiler(run, stage, job_id).validation_id)
    run.record.finish(
        stage,
        validation_id=validation.id,
        median_abs_error=validation.median_abs_error,
        max_abs_error=validation.max_abs_error,
        drift=validation.drift,
    )
    return validation.model_dump(mode="json")


def distill(run: Run) -> tuple[str, dict]:
    candidates = pool(run.config, run.shape)
    spec = {
        "kind": "distill",
        "teacher": str(run.teacher),
        "steps": run.config.distill_steps,
        "batch_size": run.config.distill_batch,
        "seq_len": run.config.seq_len,
        "warmup": max(1, run.config.distill_steps // 20),
        "eval_batches": 8,
        "checkpoint_every": max(10, run.config.distill_steps // 10),
    }
    if candidates is not None:
        spec["candidates"] = {slot: [op.model_dump() for op in ops] for slot, ops in candidates.items()}
    return trainer_job(run, "distill", spec)


def score(run: Run, distill_job: str) -> ScoreTable:
    spec = {
        "kind": "score",
        "distill_job": distill_job,
        "batch_size": run.config.batch,
        "seq_len": run.config.seq_len,
        "eval_batches": run.config.score_batches,
        "checkpoint_every": 4,
    }
    _, result = trainer_job(run, "score", spec)
    table = ScoreTable.model_validate(result)
    run.record.update(
        "score",
        teacher_loss=table.teacher_loss,
        tokens=table.tokens,
        rank_stability=table.rank_stability,
    )
    return table


def search(run: Run, stage: str, request: dict) -> SearchResponse:
    """The search (stateless and quick: asked again on every run, its answer recorded)."""
    run.check_stop()
    run.record.start(stage, digest(stage, request))
    with run.reporter.stage(stage) as bar:
        bar.update(0.0, f"K={request.get('k', 1)}")
        try:
            response = run.services.search.request(
                "POST", "/v1/search", json=request, timeout=request.get("time_limit_s", 30) + 60
            )
        except ServiceError as exc:
            if exc.code == "infeasible":
                least = "; ".join(
                    f"{d['cost']} at least {d['min_achievable']:.6g} (budget {d['max']:.6g})"
                    for d in exc.details
                )
                raise PipelineError(f"no architecture meets the budgets: {least}") from None
            raise
        found = SearchResponse.model_validate(response)
        bar.done(f"{len(found.solutions)} architecture(s), {found.status}: {found.message}")
    run.record.finish(stage, status=found.status, solutions=len(found.solutions))
    return found


def feasible(run: Run, costs: CostTable) -> None:
    """Before any training: can any architecture of the pool meet the budgets? (scores all 0)"""
    slots = [
        {
            "id": s.id,
            "candidates": [
                {"id": c.id, "score": 0.0, "costs": c.costs, "reference": c.reference} for c in s.candidates
            ],
        }
        for s in costs.slots
    ]
    body = {
        "slots": _pool_only(run, slots),
        "fixed": costs.fixed,
        "peak_costs": costs.peak_costs,
        "derived_costs": costs.derived_costs,
        "budgets": [b.model_dump(exclude_none=True) for b in run.budgets],
        "k": 1,
        "time_limit_s": 30,
    }
    search(run, "budget-check", body)


def _pool_only(run: Run, slots: list[dict]) -> list[dict]:
    """Slots restricted to the operators the distill job will learn (all, for the default pool)."""
    candidates = pool(run.config, run.shape)
    if candidates is None:
        return slots
    names = {slot: {spec_name(op) for op in ops} for slot, ops in candidates.items()}
    return [{**s, "candidates": [c for c in s["candidates"] if c["id"] in names[s["id"]]]} for s in slots]
