"""The rank job (the paper's Stage 3): each of the K architectures a search returned is finetuned
briefly and re-ranked by its held-out loss after.

The score proxy barely predicts which architecture trains best (the paper's Fig. 5 and 6), so each
architecture is built as a student from its distill job's candidates, its held-out loss measured,
finetuned for `steps` steps (the finetune's hyper-parameters, as the paper's Appendix A says; every
architecture sees the same batches), and measured again. The result ranks them by the loss after and
gives Spearman's correlation between the search's order and the new one.

Finished architectures are recorded in the checkpoint one by one, so a worker killed mid-job resumes
without redoing them. The K runs are independent: under torchrun with N processes, rank r takes
architectures r, r + N, r + 2N, ...; after each round the losses are summed across ranks (tensors,
nothing pickled) and rank 0 checkpoints them.
"""

import math
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.orm import Session

from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.trainer.kinds import inputs
from services.trainer.learning.data import job_tokens
from services.trainer.learning.distributed import job_device, rank_and_world, summed
from services.trainer.learning.stats import spearman
from services.trainer.learning.students import load_student
from services.trainer.learning.training import (
    LOG_EVERY_S,
    FinetuneLoss,
    Objective,
    heldout_loss,
    learning_rate,
    make_optimizer,
    set_learning_rate,
    train_step,
    training_batch,
)
from shared.errors import invalid
from shared.model import Decoder
from shared.schemas.jobs import Dataset, JobRef, JobSpecBase, LearningRate, within_schedule
from shared.schemas.operators import Architecture
from shared.settings import Settings


class TrainingSchedule(JobSpecBase):
    """The finetune's hyper-parameters (the paper's Table 7: Adam, cosine decay from 5e-4 to 5e-5)."""

    dataset: Dataset = "shakespeare"
    steps: int = Field(ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096, description="The global batch (split across torchrun ranks).")
    seq_len: int = Field(128, ge=2, le=131_072)
    learning_rate: LearningRate = 5e-4
    min_learning_rate: float = Field(5e-5, ge=0, le=10, allow_inf_nan=False)
    warmup: int = Field(0, ge=0, le=10_000_000)
    loss: FinetuneLoss = Field(
        "lm",
        description="lm: next-token cross-entropy (the paper's short finetune); kd: KL to the teacher's "
        "logits; mix: both.",
    )
    temperature: float = Field(1.0, gt=0, le=100, allow_inf_nan=False, description="Of the kd loss.")
    kd_weight: float = Field(0.5, ge=0, le=1, allow_inf_nan=False, description="Of kd in the mix loss.")
    eval_batches: int = Field(16, ge=1, le=100_000, description="Held-out batches of each evaluation.")

    _within_schedule = field_validator("min_learning_rate", "warmup")(within_schedule)

    def objective(self) -> Objective:
        return Objective(self.loss, self.temperature, self.kd_weight)


class RankSpec(TrainingSchedule):
    kind: Literal["rank"] = "rank"
    distill_job: JobRef = Field(description="The succeeded distill job whose candidates build the students.")
    architectures: list[Architecture] = Field(
        min_length=1,
        max_length=1000,
        description="The search's solutions in its order, as it returned them (their `choices` are used).",
    )
    steps: int = Field(50, ge=1, le=10_000_000, description="Short-finetune steps per architecture.")


class RankedArchitecture(BaseModel):
    search_rank: int = Field(description="1-based position in the search's order.")
    architecture: Architecture
    loss_before: float = Field(description="Held-out loss of the student before the short finetune.")
    loss_after: float = Field(description="Held-out loss after it.")
    perplexity_after: float


class RankResult(BaseModel):
    ranking: list[RankedArchitecture] = Field(
        description="Best first: by held-out loss after the short finetune."
    )
    winner: Architecture
    winner_search_rank: int = Field(description="Where the winner stood in the search's order.")
    search_top_rank: int = Field(description="Where the search's first architecture stands now (1 = best).")
    spearman: float | None = Field(
        description="Spearman's correlation between the search's order and the order after the finetune."
    )
    spearman_before: float | None = Field(
        description="Spearman's correlation between the search's order and the loss before the finetune."
    )
    steps: int
    heldout_tokens: int
    world_size: int


def check(spec: RankSpec, settings: Settings, session: Session) -> RankSpec:
    if len(spec.architectures) > settings.search_max_k:
        raise invalid("body.architectures", f"at most {settings.search_max_k} (UNAST_SEARCH_MAX_K)")
    distill = inputs.succeeded_job("body.distill_job", spec.distill_job, "distill", session)
    for i, architecture in enumerate(spec.architectures):
        inputs.learned_architecture(f"body.architectures.{i}", architecture, distill)
    return spec.model_copy(update={"dataset": inputs.dataset("body.dataset", spec.dataset, settings)})


def run(ctx: JobContext) -> RankResult:
    spec = RankSpec.model_validate(ctx.spec)
    rank, world = rank_and_world()
    device = job_device(ctx.settings)
    distill = ctx.job(spec.distill_job)
    teacher_dir = Path(distill.spec["teacher"])
    teacher = Decoder.from_pretrained(teacher_dir).to(device).eval().requires_grad_(False)
    train, heldout = job_tokens(spec.dataset, teacher_dir)
    count = len(spec.architectures)
    rounds = math.ceil(count / world)
    done: dict[int, list[float]] = {}  # search index -> [loss before, loss after]
    if (checkpoint := ctx.load_checkpoint()) is not None:
        done = {int(i): losses for i, losses in checkpoint.state["losses"].items()}
    if rank == 0:
        ctx.log(f"ranking {count} architectures by a {spec.steps}-step finetune on {world} x {device}")
    for r in range(rounds):
        round_indices = range(r * world, min(count, (r + 1) * world))
        if all(i in done for i in round_indices):
            continue
        mine = torch.zeros(count, 2, dtype=torch.float64)
        index = r * world + rank
        if index < count:
            started = time.monotonic()
            before, after = short_finetune(
                ctx,
                spec,
                teacher,
                distill.directory,
                spec.architectures[index],
                train,
                heldout,
                device,
                r,
                rounds,
            )
            mine[index] = torch.tensor([before.loss, after.loss], dtype=torch.float64)
            ctx.log(
                f"architecture {index + 1}/{count}: held-out loss {before.loss:.4f} -> {after.loss:.4f} "
                f"({time.monotonic() - started:.0f} s)"
            )
        everyone = summed(mine, device)  # a collective: every rank takes part, also one with no work left
        for i in round_indices:
            done[i] = everyone[i].tolist()
        if rank == 0:
            ctx.save_checkpoint(
                step=len(done), model={}, state={"losses": {str(i): v for i, v in done.items()}}
            )
    ctx.step(rounds * spec.steps, rounds * spec.steps)
    return ranked(spec, done, world)


def short_finetune(
    ctx, spec: RankSpec, teacher, distill_dir, architecture, train, heldout, device, r, rounds
):
    """Held-out evaluations of one architecture's student before and after spec.steps of finetuning."""
    student = load_student(teacher, distill_dir, architecture)
    evaluate = {"batch_size": spec.batch_size, "seq_len": spec.seq_len, "batches": spec.eval_batches}
    before = heldout_loss(student, heldout, device=device, **evaluate)
    optimizer = make_optimizer(student, spec.learning_rate)
    objective = spec.objective()
    data = torch.Generator().manual_seed(spec.seed)  # every architecture sees the same batches
    logged = time.monotonic()
    for step in range(spec.steps):
        ctx.step(r * spec.steps + step, rounds * spec.steps)
        lr = learning_rate(
            step, steps=spec.steps, lr=spec.learning_rate, min_lr=spec.min_learning_rate, warmup=spec.warmup
        )
        set_learning_rate(optimizer, lr)
        idx, targets = training_batch(train, spec.batch_size, spec.seq_len, data, device)
        loss = train_step(student, optimizer, objective, idx, targets, teacher)
        if time.monotonic() - logged >= LOG_EVERY_S:
            ctx.status(f"architecture {r + 1}: step {step + 1}/{spec.steps}, {spec.loss} loss {loss:.4f}")
            logged = time.monotonic()
    return before, heldout_loss(student, heldout, device=device, **evaluate)


def ranked(spec: RankSpec, done: dict[int, list[float]], world: int) -> RankResult:
    order = sorted(range(len(spec.architectures)), key=lambda i: (done[i][1], i))
    ranking = [
        RankedArchitecture(
            search_rank=i + 1,
            architecture=spec.architectures[i],
            loss_before=done[i][0],
            loss_after=done[i][1],
            perplexity_after=math.exp(done[i][1]),
        )
        for i in order
    ]
    search_order = list(range(len(spec.architectures)))
    return RankResult(
        ranking=ranking,
        winner=ranking[0].architecture,
        winner_search_rank=ranking[0].search_rank,
        search_top_rank=order.index(0) + 1,
        spearman=spearman(search_order, [done[i][1] for i in search_order]),
        spearman_before=spearman(search_order, [done[i][0] for i in search_order]),
        steps=spec.steps,
        heldout_tokens=spec.eval_batches * spec.batch_size * spec.seq_len,
        world_size=world,
    )


KIND = JobKind(name="rank", spec=RankSpec, result=RankResult, run=run, check=check)
