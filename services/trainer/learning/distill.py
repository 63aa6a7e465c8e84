"""Layer-wise distillation (the paper's Stage 1): every candidate learns to mimic its teacher sublayer.

One teacher pass per batch captures every slot's input x and output t = f(x); each candidate s of
that slot then trains on (x, t) alone -- (attention candidates + MLP candidates) x layers independent
problems, all in the same step. The default loss is the normalised MSE of SquareHead,
MSE(t, s) / MSE(t, 0), under which the identity candidate scores exactly 1.

Every slot's problem is independent of every other's, so several processes share the slots out, each
a contiguous run of them (each distils only its own, on the same batches as the others), and the
teacher's pass becomes a pipeline over the runs: each rank holds and runs only its run of the teacher
and hands the residual stream on. A candidate learns what it would learn in one process; no rank
holds or runs the whole teacher (its forward is a seventh of a step's FLOPs on a 135M Llama with the
small pool, and its weights the largest fixed part of a rank's memory). The flat training loop lives
in the distillation job; this module holds its parts.
"""

import contextlib
import zlib
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from services.trainer.learning.distributed import rank_and_world
from services.trainer.learning.inherit import inherit
from services.trainer.learning.students import Students
from shared.model import Decoder
from shared.operators import Identity
from shared.schemas.operators import OperatorSpec, is_teacher, parse_slot_id, spec_name

Activations = dict[str, tuple[torch.Tensor, torch.Tensor]]  # slot -> (input x, teacher output t)


def nmse(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-12)


def cosine(t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return 1 - F.cosine_similarity(s, t, dim=-1).mean()


LOSSES = {"nmse": nmse, "mse": F.mse_loss, "l1": F.l1_loss, "cosine": cosine}


@torch.no_grad()
def capture(teacher: Decoder, idx: torch.Tensor, slots: Iterable[str] | None = None) -> Activations:
    """Run the teacher once; return the input and output of every slot, or of `slots` (hooks on the
    slot modules)."""
    return capture_run(teacher, idx, range(len(teacher.slots())), slots)


@torch.no_grad()
def capture_run(
    teacher: Decoder, idx: torch.Tensor, run: range, slots: Iterable[str] | None = None
) -> Activations:
    """The input and output of `slots` (all of `run`'s when None) on the whole batch, where `run` is
    this rank's contiguous run of the teacher's slot indices (alone: every slot). On several ranks the
    teacher's pass is a pipeline: rank r takes the residual stream entering its run from rank r - 1,
    runs its slots and hands the stream on to rank r + 1, in micro-batches of rows so that the ranks
    work at once. A rank holds and runs only its run of the teacher (keep_run) and receives nothing
    but the stream: its slots' activations are its own."""
    rank, world = rank_and_world()
    ops = teacher.slots()
    wanted = {slot for slot, _ in ops[run.start : run.stop]} if slots is None else set(slots)
    activations: Activations = {}
    rows = slice(0, 0)  # the micro-batch's rows of the batch

    def keep(slot: str, x: torch.Tensor, t: torch.Tensor) -> None:
        if slot not in activations:
            whole = (len(idx), *x.shape[1:])
            activations[slot] = (x.new_empty(whole), t.new_empty(whole))
        activations[slot][0][rows] = x
        activations[slot][1][rows] = t

    hooks = [
        op.register_forward_hook(lambda _m, args, out, slot=slot: keep(slot, args[0], out))
        for slot, op in ops[run.start : run.stop]
        if slot in wanted
    ]
    sent = []  # (work, tensor): a tensor being sent must outlive its send
    try:
        start = 0
        for micro in idx.tensor_split(1 if world == 1 else min(len(idx), 2 * world)):
            rows = slice(start, start + len(micro))
            start += len(micro)
            if run.start == 0:
                x = teacher.embed(micro)
            else:
                x = micro.new_empty(
                    (*micro.shape, teacher.shape.hidden_size), dtype=teacher.embed.weight.dtype
                )
                dist.recv(x, src=rank - 1)
            x = teacher.forward_slots(x, run.start, stop=run.stop)
            if run.stop < len(ops) and world > 1:
                sent.append((dist.isend(x, dst=rank + 1), x))
        for work, _ in sent:
            work.wait()
    finally:
        for hook in hooks:
            hook.remove()
    return activations


def keep_run(teacher: Decoder, run: range, device: torch.device | str = "cpu") -> None:
    """Put the teacher's weights in this rank's run on `device` and free the rest (to the meta device:
    a slip that ran them fails at once): the embedding stays with the run that starts the pass; no run
    needs the head. The whole teacher never reaches the device."""
    for index, (_, op) in enumerate(teacher.slots()):
        op.to(device if index in run else "meta")
    teacher.embed.to(device if run.start == 0 else "meta")
    teacher.norm.to("meta")
    teacher.lm_head.to("meta")  # a tied head gets a weight of its own on meta; the embedding keeps its


def build_students(
    teacher: Decoder, candidates: dict[str, list[OperatorSpec]], calibration: Activations, seed: int
) -> tuple[Students, Students]:
    """(trainable, fixed) candidate modules per slot, keyed by candidate id.

    Trainable ones start from the teacher's weights (see inherit.py); what they cannot inherit is
    drawn from a seed of their own (the job's, the slot's and the candidate's), so a candidate starts
    the same whichever process builds it beside whichever others. The teacher's own operator (the
    teacher's module itself, not a copy) and the identity need no training and are fixed.
    """
    trainable: Students = {}
    fixed: Students = {}
    for slot, specs in candidates.items():
        _, slot_type = parse_slot_id(slot)
        teacher_op = teacher.operator(slot)
        for spec in specs:
            if is_teacher(spec, teacher.shape, slot_type):
                fixed.setdefault(slot, {})[spec_name(spec)] = teacher_op
            elif spec.kind == "identity":
                fixed.setdefault(slot, {})[spec_name(spec)] = Identity(spec, teacher.shape)
            else:
                torch.manual_seed(zlib.crc32(f"{seed}/{slot}/{spec_name(spec)}".encode()))
                module = inherit(spec, teacher_op, teacher.shape, calibration[slot][0])
                trainable.setdefault(slot, {})[spec_name(spec)] = module
    return trainable, fixed


def named_parameters(students: Students) -> dict[str, nn.Parameter]:
    """<slot>/<candidate id>/<parameter> -> parameter, the names flatten() gives their weights."""
    return {
        f"{slot}/{cid}/{name}": p
        for slot, modules in students.items()
        for cid, module in modules.items()
        for name, p in module.named_parameters()
    }


def distill_step(
    students: Students,
    optimizer: torch.optim.Optimizer,
    activations: Activations,
    loss_fn,
    cast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, dict[str, float]]:
    """One optimisation step of every candidate on its slot's captured activations; returns the losses.

    Each candidate backpropagates alone (its graph freed at once), then one optimizer step updates
    all: Adam is element-wise, so one optimizer over all candidates equals one per candidate. The
    forward passes run in `cast()` (learning/precision.py), the backward passes outside it.
    """
    losses: dict[str, dict[str, float]] = {}
    for slot, modules in students.items():
        x, t = activations[slot]
        for cid, module in modules.items():
            with cast():
                loss = loss_fn(t, module(x))
            loss.backward()
            losses.setdefault(slot, {})[cid] = loss.item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # the gradients' memory is free until the next step's backward
    return losses


@torch.no_grad()
def evaluate(students: Students, batches: Iterable[Activations]) -> dict[str, dict[str, float]]:
    """Held-out normalised MSE per slot and candidate over the teacher's activations of held-out
    batches: sum |t - s|^2 / sum |t|^2 over all tokens."""
    error: dict[str, dict[str, float]] = {slot: dict.fromkeys(m, 0.0) for slot, m in students.items()}
    energy: dict[str, float] = dict.fromkeys(students, 0.0)
    for activations in batches:
        for slot, modules in students.items():
            x, t = activations[slot]
            energy[slot] += t.double().pow(2).sum().item()
            for cid, module in modules.items():
                error[slot][cid] += (t - module(x)).double().pow(2).sum().item()
        del activations  # before the next batch's are made, not after
    return {
        slot: {cid: e / max(energy[slot], 1e-30) for cid, e in errs.items()} for slot, errs in error.items()
    }
