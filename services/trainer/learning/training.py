"""Training a whole model (the paper's Stages 3 and 4): the schedule, the losses, one step, evaluation.

The flat loops live in the jobs that use these parts (kinds/rank.py, kinds/finetune.py). Losses:
`lm` is next-token cross-entropy, as the paper finetunes; `kd` the KL divergence from the teacher's
next-token distribution to the student's at a temperature (times its square, so that gradients keep
their size); `mix` is (1 - kd_weight) * lm + kd_weight * kd. A batch is the global batch: under
torchrun every rank draws the same windows and trains on its own rows of them, and the averaged
gradients are those of the whole batch, so N processes follow the one-process run.
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from services.trainer.learning.data import heldout_batches, sample_batch
from shared.model import Decoder
from shared.schemas.trainer import FinetuneLoss, TrainingSchedule

LOG_EVERY_S = 10.0  # a running job logs about this often


def learning_rate(step: int, *, steps: int, lr: float, min_lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to min_lr (the paper's Tables 6 and 7)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group's rate: how each loop applies the schedule (learning_rate) at a step."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (the paper's Table 7); weight decay none for a short finetune from trained weights."""
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the next-token distributions at `temperature`, mean over tokens."""
    t = temperature
    student = F.log_softmax(student_logits.float().flatten(0, 1) / t, dim=-1)
    teacher = F.log_softmax(teacher_logits.float().flatten(0, 1) / t, dim=-1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * t * t


@dataclass(frozen=True)
class Objective:
    loss: FinetuneLoss = "lm"
    temperature: float = 1.0
    kd_weight: float = 0.5  # for "mix"

    @classmethod
    def of(cls, schedule: TrainingSchedule) -> "Objective":
        return cls(schedule.loss, schedule.temperature, schedule.kd_weight)

    @property
    def needs_teacher(self) -> bool:
        return self.loss != "lm"

    def __call__(
        self, logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None
    ) -> torch.Tensor:
        lm = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()) if self.loss != "kd" else None
        if self.loss == "lm":
            return lm
        kd = kd_loss(logits, teacher_logits, self.temperature)
        return kd if self.loss == "kd" else (1 - self.kd_weight) * lm + self.kd_weight * kd


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    idx: torch.Tensor,
    targets: torch.Tensor,
    teacher: Decoder | None,
    cast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> float:
    """One optimisation step on one batch; returns its loss. The forward passes run in `cast()`
    (learning/precision.py). Under DistributedDataParallel the backward pass averages the gradients
    across ranks."""
    teacher_logits = None
    with cast():
        if objective.needs_teacher:
            with torch.no_grad():
                teacher_logits = teacher(idx)
        loss = objective(model(idx), targets, teacher_logits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def rank_rows(batch: tuple[torch.Tensor, torch.Tensor], rank: int, world: int) -> tuple[torch.Tensor, ...]:
    """This rank's rows of the global batch."""
    return tuple(t[rank::world] for t in batch)


def training_batch(
    tokens: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    idx, targets = sample_batch(tokens, batch_size, seq_len, generator)
    return idx.to(device), targets.to(device)


@dataclass(frozen=True)
class Evaluation:
    loss: float  # mean next-token cross-entropy, nats per token
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


@torch.no_grad()
def heldout_loss(
    model: Decoder, tokens: torch.Tensor, *, batch_size: int, seq_len: int, batches: int, device: torch.device
) -> Evaluation:
    """Mean next-token loss over a fixed held-out set: the first `batches` consecutive windows, the
    same every time (summed in float64, so the figure does not depend on the batching)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for idx, targets in heldout_batches(tokens, batch_size, seq_len, batches):
        logits = model(idx.to(device)).float()
        total += F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), reduction="sum").item()
        count += targets.numel()
    model.train(was_training)
    if count == 0:
        raise ValueError(
            f"the held-out text is shorter than one batch of {batch_size} x {seq_len + 1} tokens"
        )
    return Evaluation(total / count, count)
