"""The distill job (the paper's Stage 1): a flat loop over learning/distill.py's parts, with
checkpoints, resume and outputs.

Outputs (under the job's folder): candidates.safetensors + candidates.json (learning/students.py),
and the result: held-out normalised MSE per slot and candidate.
"""

import time
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from services.jobs.checkpoint import restore_optimizer
from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.trainer.kinds import inputs
from services.trainer.learning.data import heldout_batches, job_tokens, sample_batch
from services.trainer.learning.distill import (
    LOSSES,
    build_students,
    capture,
    distill_step,
    evaluate,
    parameters,
)
from services.trainer.learning.distributed import gathered_rng_states, job_device, rank_and_world
from services.trainer.learning.students import CANDIDATES, flatten, unflatten_into
from services.trainer.learning.training import LOG_EVERY_S, learning_rate, set_learning_rate
from shared import decilm
from shared.candidates import inheritance_problem, slot_pools
from shared.errors import invalid
from shared.model import Decoder
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
    """The distillation loop. Alone, or one rank of several under torchrun: every rank distils its own
    batches, gradients are averaged, rank 0 logs, checkpoints and saves."""
    spec = DistillSpec.model_validate(ctx.spec)
    rank, world = rank_and_world()
    device = job_device(ctx.settings)
    torch.manual_seed(spec.seed)
    teacher = Decoder.from_pretrained(spec.teacher).to(device).eval().requires_grad_(False)
    train, heldout = job_tokens(spec.dataset, Path(spec.teacher))
    data = torch.Generator().manual_seed(spec.seed + rank)
    calibration, _ = sample_batch(
        train, spec.batch_size, spec.seq_len, torch.Generator().manual_seed(spec.seed + 1)
    )
    specs = slot_candidates(spec, teacher)
    trainable, fixed = build_students(teacher, specs, capture(teacher, calibration.to(device)))
    optimizer = torch.optim.AdamW(
        parameters(trainable), lr=spec.learning_rate, betas=(0.9, 0.95), weight_decay=0.0
    )
    loss_fn = LOSSES[spec.loss]
    start = 0
    if (checkpoint := ctx.load_checkpoint()) is not None:
        unflatten_into(trainable, checkpoint.model)
        restore_optimizer(optimizer, checkpoint.optimizer)
        data.set_state(checkpoint.extra[f"data_rng.{rank}"])
        start = checkpoint.step
    n_candidates = sum(len(m) for m in trainable.values())
    work = spec.steps + EVAL_COST * spec.eval_batches  # progress counts the final evaluation too
    if rank == 0:
        ctx.log(
            f"distilling {n_candidates} candidates in {len(trainable)} slots on {world} x {device}, "
            f"from step {start} of {spec.steps}; data: {len(train)} training and {len(heldout)} held-out "
            "tokens"
        )
    logged = time.monotonic()
    for step in range(start, spec.steps):
        ctx.step(step, spec.steps, progress=step / work)
        lr = learning_rate(
            step, steps=spec.steps, lr=spec.learning_rate, min_lr=spec.min_learning_rate, warmup=spec.warmup
        )
        set_learning_rate(optimizer, lr)
        idx, _ = sample_batch(train, spec.batch_size, spec.seq_len, data)
        losses = distill_step(trainable, optimizer, capture(teacher, idx.to(device)), loss_fn)
        if rank == 0 and (time.monotonic() - logged >= LOG_EVERY_S or step in (start, spec.steps - 1)):
            mean = sum(v for by in losses.values() for v in by.values()) / max(1, n_candidates)
            ctx.log(f"step {step + 1}/{spec.steps} lr {lr:.2e} mean {spec.loss} {mean:.4f}")
            logged = time.monotonic()
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < spec.steps:
            rng = gathered_rng_states(data, device)  # a collective: every rank takes part
            if rank == 0:
                ctx.save_checkpoint(step=step + 1, model=flatten(trainable), optimizer=optimizer, extra=rng)
    ctx.step(spec.steps, spec.steps, progress=spec.steps / work)
    every = {s: {**fixed.get(s, {}), **trainable.get(s, {})} for s in specs}
    operators = {slot: {spec_name(op): op for op in ops} for slot, ops in specs.items()}
    if rank != 0:
        return DistillResult(
            teacher=spec.teacher,
            heldout_nmse={},
            operators=operators,
            world_size=world,
            train_tokens=len(train),
            heldout_tokens=len(heldout),
        )

    def batches():
        for b, (x, _) in enumerate(
            heldout_batches(heldout, spec.batch_size, spec.seq_len, spec.eval_batches)
        ):
            ctx.status("held-out normalised MSE", (spec.steps + EVAL_COST * b) / work)
            yield x.to(device)

    nmse = evaluate(teacher, every, batches())
    tensors = {k: v.cpu() for k, v in flatten(trainable).items()}
    as_json = {
        slot: {cid: op.model_dump(mode="json") for cid, op in ops.items()} for slot, ops in operators.items()
    }
    ctx.save_artifact(
        CANDIDATES, tensors, {"teacher": spec.teacher, "operators": as_json, "heldout_nmse": nmse}
    )
    return DistillResult(
        teacher=spec.teacher,
        heldout_nmse=nmse,
        operators=operators,
        world_size=world,
        train_tokens=len(train),
        heldout_tokens=len(heldout),
    )


KIND = JobKind(name="distill", spec=DistillSpec, result=DistillResult, run=run, check=check)
