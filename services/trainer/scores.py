"""Candidate scores, the e_ij of the paper's Eq. 2: held-out LM loss with only slot i replaced by
candidate j, minus the teacher's loss.

Nothing that does not change is recomputed: the residual stream entering slot i is the teacher's, so
one teacher pass per batch caches it for every slot, and each (slot, candidate) runs only from slot i
on. The teacher's own operator changes nothing: its score is 0 without running it. (Stacking a slot's
candidates into one larger batch was measured slower on CPU: the activations leave the cache.)
"""

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from services.trainer.distill import Students
from shared.model import Decoder, residual


def _loss_sum(teacher: Decoder, x: torch.Tensor, targets: torch.Tensor) -> float:
    logits = teacher.head(x).float()
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()


@torch.no_grad()
def score_table(
    teacher: Decoder, candidates: Students, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[float, dict[str, dict[str, float]]]:
    """(teacher's mean held-out loss, slot -> candidate id -> score). batches yield (idx, targets)."""
    slot_index = {slot: index for index, (slot, _) in enumerate(teacher.slots())}
    to_run = {  # the teacher's own operator is left out: its score is 0 by definition
        slot: {cid: m for cid, m in modules.items() if m is not teacher.operator(slot)}
        for slot, modules in candidates.items()
    }
    loss_sums = {slot: dict.fromkeys(modules, 0.0) for slot, modules in to_run.items()}
    teacher_sum, tokens = 0.0, 0
    for idx, targets in batches:
        x = teacher.embed(idx)
        entering = []  # the residual stream entering each slot
        for _, op in teacher.slots():
            entering.append(x)
            x = residual(op, x)
        teacher_sum += _loss_sum(teacher, x, targets)
        tokens += targets.numel()
        for slot, modules in to_run.items():
            i = slot_index[slot]
            for cid, module in modules.items():
                out = teacher.forward_slots(residual(module, entering[i]), start=i + 1)
                loss_sums[slot][cid] += _loss_sum(teacher, out, targets)
    teacher_loss = teacher_sum / tokens
    scores = {slot: dict.fromkeys(modules, 0.0) for slot, modules in candidates.items()}
    for slot, sums in loss_sums.items():
        scores[slot].update({cid: total / tokens - teacher_loss for cid, total in sums.items()})
    return teacher_loss, scores
