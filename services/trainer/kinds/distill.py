"""The distill job (the paper's Stage 1): a flat loop over learning/distill.py's parts, with
checkpoints, resume and outputs.

Outputs (under the job's folder): candidates.safetensors + candidates.json (learning/students.py),
and the result: held-out normalised MSE per slot and candidate.
"""

import functools
import time
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from services.jobs.checkpoint import optimizer_tensors, restore_optimizer_tensors
from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.trainer.kinds import inputs
from services.trainer.learning.data import heldout_batches, job_tokens, sample_batch
from services.trainer.learning.distill import (
    LOSSES,
    build_students,
    capture_run,
    distill_step,
    evaluate,
    keep_run,
    named_parameters,
)
from services.trainer.learning.distributed import gathered_files, job_device, rank_and_world, summed
from services.trainer.learning.peak import PeakMemory
from services.trainer.learning.precision import autocast, resolved
from services.trainer.learning.students import CANDIDATES, flatten, unflatten_into
from services.trainer.learning.training import LOG_EVERY_S, learning_rate, set_learning_rate
from shared import decilm
from shared.candidates import inheritance_problem, slot_pools
from shared.errors import invalid
from shared.model import Decoder
from shared.plan import slot_runs
from shared.schemas.operators import OperatorSpec, is_teacher, parse_slot_id, spec_name, teacher_operator
from shared.schemas.trainer import DistillResult, DistillSpec
from shared.settings import Settings

EVAL_COST = 1 / 3  # a held-out batch (forward passes only) against a training step (forward and backward)


def check(spec: DistillSpec, settings: Settings, _session: Session) -> DistillSpec:
    teacher, shape = inputs.model_dir("body.teacher", spec.teacher, settings)
    teacher_attention = teacher_operator(shape, "attention")
    servable = spec.format == "nemotron-nas"
    if servable and (why := decilm.family_problem(shape)) is not None:
        raise invalid("body.format", f"the teacher cannot be served in the nemotron-nas form: {why}")
    for slot, specs in (spec.candidates or {}).items():
        layer, slot_type = parse_slot_id(slot)
        if layer >= shape.num_layers:
            raise invalid(f"body.candidates.{slot}", f"the teacher has {shape.num_layers} blocks")
        for i, candidate in enumerate(specs):
            if (problem := inheritance_problem(candidate, teacher_attention)) is not None:
                raise invalid(f"body.candidates.{slot}.{i}", f"{spec_name(candidate)}: {problem}")
            # the teacher's own operator is the slot's reference (the teacher's module, not learned):
            # always allowed; a search in this format leaves it out where the form cannot express it
            if (
                servable
                and not is_teacher(candidate, shape, slot_type)
                and (problem := decilm.problem(candidate, slot_type, shape)) is not None
            ):
                raise invalid(
                    f"body.candidates.{slot}.{i}", f"the nemotron-nas form cannot express it: {problem}"
                )
    dataset = inputs.dataset("body.dataset", spec.dataset, settings)
    return spec.model_copy(update={"teacher": str(teacher), "dataset": dataset})


def slot_candidates(spec: DistillSpec, teacher: Decoder) -> dict[str, list[OperatorSpec]]:
    """The spec's candidates, or the default pool of the spec's format for every slot of the teacher."""
    if spec.candidates is not None:
        return spec.candidates
    return slot_pools(teacher.shape, "default", spec.format)


def run(ctx: JobContext) -> DistillResult:
    """The distillation loop. Alone, or one rank of several (torchrun, or a worker's job over several
    processes): the slots are shared out, every rank distils its own on the same batches; each rank
    checkpoints its own candidates, rank 0 logs and writes the outputs."""
    spec = DistillSpec.model_validate(ctx.spec)
    rank, world = rank_and_world()
    device = job_device(ctx.settings)
    peak = PeakMemory(device)
    torch.manual_seed(spec.seed)
    teacher = Decoder.from_pretrained(spec.teacher).eval().requires_grad_(False)
    specs = slot_candidates(spec, teacher)
    try:
        run = slot_runs(specs, teacher.shape, spec.batch_size * spec.seq_len, spec.seq_len, world)[rank]
    except ValueError as error:
        raise ValueError(f"distilling on {world} processes: {error}") from None
    keep_run(teacher, run, device)  # a rank holds only its run of the teacher
    train, heldout = job_tokens(spec.dataset, Path(spec.teacher))
    data = torch.Generator().manual_seed(spec.seed)  # the same batches on every rank
    calibration, _ = sample_batch(
        train, spec.batch_size, spec.seq_len, torch.Generator().manual_seed(spec.seed + 1)
    )
    in_run = {slot for slot, _ in teacher.slots()[run.start : run.stop]}
    mine = {slot: ops for slot, ops in specs.items() if slot in in_run}
    trainable, fixed = build_students(
        teacher, mine, capture_run(teacher, calibration.to(device), run, mine), seed=spec.seed
    )
    named = named_parameters(trainable)
    if not named:  # more processes than slots with anything to learn
        raise ValueError(f"process {rank} of {world} has no candidate to train: use fewer processes")
    optimizer = torch.optim.AdamW(named.values(), lr=spec.learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    loss_fn = LOSSES[spec.loss]
    cast = functools.partial(autocast, device, ctx.settings.trainer_precision)
    start = 0
    ours = tuple(f"{prefix}/{slot}/" for slot in mine for prefix in ("model", "optimizer"))
    if (checkpoint := ctx.load_sharded_checkpoint(lambda key: key.startswith((*ours, "extra/")))) is not None:
        tensors = checkpoint.tensors
        unflatten_into(trainable, {k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        state = {k[10:]: v for k, v in tensors.items() if k.startswith("optimizer/")}
        restore_optimizer_tensors(optimizer, list(named), state)
        data.set_state(tensors["extra/data_rng"])
        start = checkpoint.step
    held = torch.zeros(world, dtype=torch.float64)
    held[rank] = sum(p.numel() for p in named.values())
    held = summed(held, device)  # every rank's count of trained parameters (a collective)
    work = spec.steps + EVAL_COST * spec.eval_batches  # progress counts the final evaluation too
    n_candidates = sum(len(ops) for ops in specs.values())
    shares = ", ".join(f"{int(n):,}" for n in held)
    ctx.log(
        f"distilling {n_candidates} candidates in {len(specs)} slots on {world} x {device} "
        f"({resolved(device, ctx.settings.trainer_precision)}), "
        f"from step {start} of {spec.steps}; parameters per process: {shares}; "
        f"data: {len(train)} training and {len(heldout)} held-out tokens"
    )
    logged = time.monotonic()
    for step in range(start, spec.steps):
        ctx.step(step, spec.steps, progress=step / work)
        lr = learning_rate(
            step, steps=spec.steps, lr=spec.learning_rate, min_lr=spec.min_learning_rate, warmup=spec.warmup
        )
        set_learning_rate(optimizer, lr)
        idx, _ = sample_batch(train, spec.batch_size, spec.seq_len, data)
        with cast():  # the teacher's pass, a pipeline over the ranks' runs
            activations = capture_run(teacher, idx.to(device), run, mine)
        losses = distill_step(trainable, optimizer, activations, loss_fn, cast)
        if time.monotonic() - logged >= LOG_EVERY_S or step in (start, spec.steps - 1):
            values = [v for by in losses.values() for v in by.values()]
            mean = sum(values) / max(1, len(values))
            whose = " (rank 0's candidates)" if world > 1 else ""
            ctx.log(f"step {step + 1}/{spec.steps} lr {lr:.2e} mean {spec.loss} {mean:.4f}{whose}")
            logged = time.monotonic()
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < spec.steps:
            tensors = {f"model/{k}": v for k, v in flatten(trainable).items()}
            tensors |= {f"optimizer/{k}": v for k, v in optimizer_tensors(optimizer, list(named)).items()}
            if rank == 0:
                tensors["extra/data_rng"] = data.get_state()
            ctx.save_sharded_checkpoint(step=step + 1, tensors=tensors)  # a collective
    ctx.step(spec.steps, spec.steps, progress=spec.steps / work)
    activations = {}  # the last step's: freed before the held-out pass

    def heldout_activations():
        for b, (x, _) in enumerate(
            heldout_batches(heldout, spec.batch_size, spec.seq_len, spec.eval_batches)
        ):
            ctx.status("held-out normalised MSE", (spec.steps + EVAL_COST * b) / work)
            yield capture_run(teacher, x.to(device), run, mine)

    every = {s: {**fixed.get(s, {}), **trainable.get(s, {})} for s in mine}
    nmse = gathered_nmse(evaluate(every, heldout_activations()), specs, device)
    peaks = peak.per_process()  # a collective
    ctx.log(f"peak memory per process: {', '.join(f'{n / 2**30:.2f} GiB' for n in peaks)}")
    tensors = gathered_files({k: v.cpu() for k, v in flatten(trainable).items()}, ctx.directory / "shards")
    operators = {slot: {spec_name(op): op for op in ops} for slot, ops in specs.items()}
    if rank == 0:
        as_json = {
            slot: {cid: op.model_dump(mode="json") for cid, op in ops.items()}
            for slot, ops in operators.items()
        }
        ctx.save_artifact(
            CANDIDATES, tensors, {"teacher": spec.teacher, "operators": as_json, "heldout_nmse": nmse}
        )
    return DistillResult(
        teacher=spec.teacher,
        heldout_nmse=nmse,
        operators=operators,
        world_size=world,
        parameters_per_process=[int(n) for n in held],
        peak_memory_bytes=peaks,
        train_tokens=len(train),
        heldout_tokens=len(heldout),
    )


def gathered_nmse(
    mine: dict[str, dict[str, float]], specs: dict[str, list[OperatorSpec]], device: torch.device
) -> dict[str, dict[str, float]]:
    """Every rank's held-out NMSE (of its own slots) as one table on every rank (a collective)."""
    keys = [(slot, spec_name(op)) for slot, ops in specs.items() for op in ops]
    values = torch.tensor([mine.get(slot, {}).get(cid, 0.0) for slot, cid in keys], dtype=torch.float64)
    total = summed(values, device).tolist()
    table: dict[str, dict[str, float]] = {}
    for (slot, cid), value in zip(keys, total, strict=True):
        table.setdefault(slot, {})[cid] = value
    return table


KIND = JobKind(name="distill", spec=DistillSpec, result=DistillResult, run=run, check=check, distributed=True)
