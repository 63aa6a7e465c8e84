"""The distillation job: a flat loop over distill.py's parts, with checkpoints, resume and outputs.

Outputs (under the job's folder): candidates.safetensors (every trained candidate's weights, keyed
<slot>/<candidate id>/<parameter>) with candidates.json (slot -> candidate id -> operator spec; the
teacher's own operator and the identity are listed but carry no weights: they are the teacher's and
nothing), and the result: held-out normalised MSE per slot and candidate.
"""

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from services.trainer.checkpoint import restore_optimizer
from services.trainer.context import JobContext
from services.trainer.data import heldout_batches, job_tokens, sample_batch
from services.trainer.distill import (
    LOSSES,
    Students,
    build_students,
    capture,
    distill_step,
    evaluate,
    learning_rate,
    parameters,
)
from shared.candidates import candidates as default_candidates
from shared.model import Decoder
from shared.operators import Identity, build_operator
from shared.schemas.jobs import DistillSpec
from shared.schemas.operators import OperatorSpec, is_teacher, operator_adapter, parse_slot_id, spec_name

LOG_EVERY = 25


def slot_candidates(spec: DistillSpec, teacher: Decoder) -> dict[str, list[OperatorSpec]]:
    """The spec's candidates, or the default pool for every slot of the teacher."""
    if spec.candidates is not None:
        return spec.candidates
    return {slot: default_candidates(teacher.shape, parse_slot_id(slot)[1]) for slot, _ in teacher.slots()}


def flatten(students: Students) -> dict[str, torch.Tensor]:
    return {
        f"{slot}/{cid}/{name}": tensor
        for slot, modules in students.items()
        for cid, module in modules.items()
        for name, tensor in module.state_dict().items()
    }


def unflatten_into(students: Students, tensors: dict[str, torch.Tensor]) -> None:
    for slot, modules in students.items():
        for cid, module in modules.items():
            prefix = f"{slot}/{cid}/"
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})


def run_distill(ctx: JobContext) -> dict[str, Any]:
    """The distillation loop. Alone, or one rank of several under torchrun (services/trainer/local.py):
    every rank distils its own batches, gradients are averaged, rank 0 logs, checkpoints and saves."""
    spec = DistillSpec.model_validate(ctx.spec)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
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
    if rank == 0:
        ctx.log(
            f"distilling {n_candidates} candidates in {len(trainable)} slots on {world} x {device}, "
            f"from step {start} of {spec.steps}"
        )
    for step in range(start, spec.steps):
        ctx.step(step, spec.steps)
        lr = learning_rate(
            step, steps=spec.steps, lr=spec.learning_rate, min_lr=spec.min_learning_rate, warmup=spec.warmup
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx, _ = sample_batch(train, spec.batch_size, spec.seq_len, data)
        losses = distill_step(trainable, optimizer, capture(teacher, idx.to(device)), loss_fn)
        if rank == 0 and (step % LOG_EVERY == 0 or step == spec.steps - 1):
            mean = sum(v for by in losses.values() for v in by.values()) / max(1, n_candidates)
            ctx.log(f"step {step + 1}/{spec.steps} lr {lr:.2e} mean {spec.loss} {mean:.4f}")
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < spec.steps:
            rng = data_rng_states(data, world, device)  # a collective: every rank takes part
            if rank == 0:
                ctx.save_checkpoint(step=step + 1, model=flatten(trainable), optimizer=optimizer, extra=rng)
    ctx.step(spec.steps, spec.steps)
    if rank != 0:
        return {}
    held_out = heldout_batches(heldout, spec.batch_size, spec.seq_len, spec.eval_batches)
    every = {s: {**fixed.get(s, {}), **trainable.get(s, {})} for s in specs}
    nmse = evaluate(teacher, every, [x.to(device) for x, _ in held_out])
    operators = {
        slot: {spec_name(op): op.model_dump(mode="json") for op in ops} for slot, ops in specs.items()
    }
    tensors = {k: v.cpu() for k, v in flatten(trainable).items()}
    ctx.save_artifact(
        "candidates", tensors, {"teacher": spec.teacher, "operators": operators, "heldout_nmse": nmse}
    )
    return {"teacher": spec.teacher, "heldout_nmse": nmse, "operators": operators, "world_size": world}


def job_device(settings) -> torch.device:
    """The settings' device; under torchrun on CUDA, this rank's own GPU."""
    if settings.trainer_device.startswith("cuda") and dist.is_initialized():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(settings.trainer_device)


def data_rng_states(generator: torch.Generator, world: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's data RNG state, so each rank resumes its own batch stream."""
    state = generator.get_state()
    if world == 1:
        return {"data_rng.0": state}
    gathered = [torch.empty_like(state, device=device) for _ in range(world)]
    dist.all_gather(gathered, state.to(device))
    return {f"data_rng.{r}": s.cpu() for r, s in enumerate(gathered)}


def load_candidates(artifact_dir: Path, teacher: Decoder) -> Students:
    """A distill job's candidates as modules: trained weights, the teacher's own operators, identities."""
    meta = json.loads((artifact_dir / "candidates.json").read_text())
    tensors = load_file(artifact_dir / "candidates.safetensors")
    students: Students = {}
    for slot, by_id in meta["operators"].items():
        _, slot_type = parse_slot_id(slot)
        for cid, payload in by_id.items():
            op = operator_adapter.validate_python(payload)
            if is_teacher(op, teacher.shape, slot_type):
                module = teacher.operator(slot)
            elif op.kind == "identity":
                module = Identity(op, teacher.shape)
            else:
                module = build_operator(op, teacher.shape)
                prefix = f"{slot}/{cid}/"
                module.load_state_dict(
                    {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
                )
            students.setdefault(slot, {})[cid] = module.to(teacher.embed.weight.device).eval()
    return students
