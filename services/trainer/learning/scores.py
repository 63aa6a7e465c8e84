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

from services.trainer.learning.students import Students
from shared.model import Decoder, residual


def _loss_sum(teacher: Decoder, x: torch.Tensor, targets: torch.Tensor) -> float:
    logits = teacher.head(x).float()
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()


@torch.no_grad()
def batch_loss_sums(
    teacher: Decoder, candidates: Students, idx: torch.Tensor, targets: torch.Tensor
) -> tuple[float, dict[str, dict[str, float]]]:
    """One batch: the teacher's summed token loss, and each (slot, candidate)'s with that slot replaced.
    The teacher's own operator is left out (its score is 0 by definition)."""
    x = teacher.embed(idx)
    entering = []  # the residual stream entering each slot
    for _, op in teacher.slots():
        entering.append(x)
        x = residual(op, x)
    teacher_sum = _loss_sum(teacher, x, targets)
    sums: dict[str, dict[str, float]] = {}
    for index, (slot, teacher_op) in enumerate(teacher.slots()):
        for cid, module in candidates.get(slot, {}).items():
            if module is not teacher_op:
                out = teacher.forward_slots(residual(module, entering[index]), start=index + 1)
                sums.setdefault(slot, {})[cid] = _loss_sum(teacher, out, targets)
    return teacher_sum, sums


def scores_from_sums(
    candidates: Students, teacher_sum: float, sums: dict[str, dict[str, float]], tokens: int
) -> tuple[float, dict[str, dict[str, float]]]:
    """(teacher's mean loss, slot -> candidate -> mean loss change) from summed token losses."""
    teacher_loss = teacher_sum / tokens
    scores = {slot: dict.fromkeys(modules, 0.0) for slot, modules in candidates.items()}
    for slot, by_candidate in sums.items():
        scores[slot].update({cid: total / tokens - teacher_loss for cid, total in by_candidate.items()})
    return teacher_loss, scores


def score_table(
    teacher: Decoder, candidates: Students, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[float, dict[str, dict[str, float]]]:
    """(teacher's mean held-out loss, slot -> candidate id -> score). batches yield (idx, targets)."""
    teacher_sum, sums, tokens = 0.0, {}, 0
    for idx, targets in batches:
        batch_teacher, batch_sums = batch_loss_sums(teacher, candidates, idx, targets)
        teacher_sum += batch_teacher
        tokens += targets.numel()
        for slot, by_candidate in batch_sums.items():
            for cid, value in by_candidate.items():
                sums.setdefault(slot, {}).setdefault(cid, 0.0)
                sums[slot][cid] += value
    return scores_from_sums(candidates, teacher_sum, sums, tokens)
