"""Layer-wise distillation (the paper's Stage 1): every candidate learns to mimic its teacher sublayer.

One teacher pass per batch captures every slot's input x and output t = f(x); each candidate s of
that slot then trains on (x, t) alone -- (attention candidates + MLP candidates) x layers independent
problems, all in the same step. The default loss is the normalised MSE of SquareHead,
MSE(t, s) / MSE(t, 0), under which the identity candidate scores exactly 1.

Every slot's problem is independent of every other's, so several processes share the slots out (each
distils only its own, on the same batches as the others) and the teacher's pass by rows (each runs
its rows of the batch through the teacher and sends every slot's activations to the slot's owner):
a candidate learns what it would learn in one process, and no rank runs the whole teacher (its
forward is a seventh of a step's FLOPs on a 135M Llama with the small pool: run whole by every rank,
it alone would hold 2 processes near 1.75x). The flat training loop lives in the distillation job; this
module holds its parts.
"""

import contextlib
import zlib
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from services.trainer.learning.distributed import rank_and_world, rows_gathered
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
    activations: Activations = {}
    _each_slot(teacher, idx, slots, lambda slot, x, t: activations.__setitem__(slot, (x, t)))
    return activations


@torch.no_grad()
def capture_shared(teacher: Decoder, idx: torch.Tensor, owner: dict[str, int]) -> Activations:
    """The input and output of this rank's slots (`owner`: slot -> rank) on the whole batch, the
    teacher's pass shared out by rows: each rank runs its rows (the batch padded with its own rows to
    a multiple of the ranks) and, as each slot's output comes, sends its rows to the slot's owner (a
    collective per slot: every rank reaches the slots in the same order). A rank holds only its own
    slots' activations, never every slot's rows. Alone: capture()."""
    rank, world = rank_and_world()
    if world == 1:
        return capture(teacher, idx, owner)
    rows = -(-len(idx) // world)
    padded = idx[torch.arange(rows * world, device=idx.device) % len(idx)]
    activations: Activations = {}

    def send(slot: str, x: torch.Tensor, t: torch.Tensor) -> None:
        whole_x, whole_t = rows_gathered(x, dst=owner[slot]), rows_gathered(t, dst=owner[slot])
        if whole_x is not None and whole_t is not None:
            activations[slot] = (whole_x[: len(idx)], whole_t[: len(idx)])

    _each_slot(teacher, padded[rank * rows : (rank + 1) * rows], owner, send)
    return activations


def _each_slot(
    teacher: Decoder,
    idx: torch.Tensor,
    slots: Iterable[str] | None,
    on_slot: Callable[[str, torch.Tensor, torch.Tensor], None],
) -> None:
    """Run the teacher's blocks on `idx`, calling on_slot(slot, x, t) as each of `slots` (all when
    None) is run, in the teacher's order (hooks on the slot modules; the LM head is not needed)."""
    wanted = None if slots is None else set(slots)
    hooks = [
        op.register_forward_hook(lambda _m, args, out, slot=slot: on_slot(slot, args[0], out))
        for slot, op in teacher.slots()
        if wanted is None or slot in wanted
    ]
    try:
        teacher.forward_slots(teacher.embed(idx))
    finally:
        for hook in hooks:
            hook.remove()


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
    optimizer.zero_grad(set_to_none=True)
    losses: dict[str, dict[str, float]] = {}
    for slot, modules in students.items():
        x, t = activations[slot]
        for cid, module in modules.items():
            with cast():
                loss = loss_fn(t, module(x))
            loss.backward()
            losses.setdefault(slot, {})[cid] = loss.item()
    optimizer.step()
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
    return {
        slot: {cid: e / max(energy[slot], 1e-30) for cid, e in errs.items()} for slot, errs in error.items()
    }
