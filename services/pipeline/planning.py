"""`unast compress --plan`: every trainer stage's plan (shared/plan.py) from the configuration and the
teacher's shape, printed without starting anything. The architectures the search will pick are not
known yet: rank and finetune are planned at the teacher's own architecture, their upper bound."""

from services.pipeline.configs import Config
from shared import plan
from shared.candidates import merged, slot_pools
from shared.costs import MEMORY_SHARE
from shared.decilm import Format, family_problem
from shared.device_capacity import device_flops, device_memory_bytes
from shared.schemas.operators import Architecture
from shared.schemas.shape import ModelShape
from shared.schemas.trainer import RankSpec
from shared.settings import Settings


def stage_plans(config: Config, shape: ModelShape, format: Format, processes: int) -> list[plan.StagePlan]:
    pools = [slot_pools(shape, config.pool, format)]
    if format == "unast" and config.nemotron_nas_row and family_problem(shape) is None:
        pools.append(slot_pools(shape, config.pool, "nemotron-nas"))  # the servable row's
    candidates = merged(*pools)
    teacher = Architecture.teacher(shape)
    figures = {"seq_len": config.seq_len, "processes": processes}
    # the rank job as methods.rank sends it: its loss is the spec's own default
    rank = RankSpec(distill_job="(planned)", architectures=[teacher], steps=config.rank_steps)
    return [
        plan.distill(
            shape, candidates, batch_size=config.distill_batch, steps=config.distill_steps, **figures
        ),
        plan.score(shape, candidates, batch_size=config.batch, batches=config.score_batches, **figures),
        plan.finetune(
            shape,
            teacher,
            batch_size=config.batch,
            steps=config.rank_steps,
            kd=rank.loss != "lm",
            kind="rank",
            architectures=config.k,
            **figures,
        ),
        plan.finetune(
            shape,
            teacher,
            batch_size=config.batch,
            steps=config.finetune_steps,
            kd=config.loss != "lm",
            **figures,
        ),
    ]


def plan_table(config: Config, shape: ModelShape, format: Format, settings: Settings) -> str:
    """The stages' plans as a Markdown table, against the trainer's device."""
    processes = settings.trainer_procs_per_job
    device = settings.trainer_device
    available = device_memory_bytes(device)
    rate = device_flops(device, settings.torch_threads)
    offered = f"{available * MEMORY_SHARE / 2**30:.1f} GiB" if available else "unknown memory"
    speed = f"{rate / 1e12:.2f} TFLOP/s measured" if rate else "an unmeasured speed"
    lines = [
        f"plan on {processes} process(es) of {device} ({offered} for a job, {speed} x {plan.UTILISATION}):",
        "",
        "| stage | peak per process | largest parts | fits | TFLOP per process | expected time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, stage in enumerate(stage_plans(config, shape, format, processes)):
        parts = sorted(stage.memory.items(), key=lambda kv: -kv[1])[:2]
        largest = ", ".join(f"{name} {value / 2**30:.2f} GiB" for name, value in parts)
        fits = "?"
        if available is not None:
            fits = "yes" if stage.peak_bytes <= available * MEMORY_SHARE else "no"
        if fits == "no" and stage.kind in ("distill", "score"):  # sharing out shrinks their peaks
            again = lambda n, i=i: stage_plans(config, shape, format, n)[i]  # noqa: E731
            needed = plan.ranks_needed(again, available * MEMORY_SHARE)
            fits = f"no: {needed} processes would do" if needed else "no: not on any number of processes"
        time = "?" if rate is None else _duration(stage.flops / (rate * plan.UTILISATION))
        lines.append(
            f"| {stage.kind} | {stage.peak_bytes / 2**30:.2f} GiB | {largest} | {fits} | "
            f"{stage.flops / 1e12:,.1f} | {time} |"
        )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
