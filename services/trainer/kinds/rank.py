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

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from sqlalchemy.orm import Session

from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.trainer.kinds import inputs
from services.trainer.learning.data import job_tokens
from services.trainer.learning.distributed import job_device, rank_and_world, summed
from services.trainer.learning.peak import PeakMemory
from services.trainer.learning.precision import autocast
from services.trainer.learning.stats import spearman
from services.trainer.learning.students import load_student
from services.trainer.learning.training import (
    LOG_EVERY_S,
    Evaluation,
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
from shared.schemas.operators import Architecture
from shared.schemas.trainer import RankedArchitecture, RankResult, RankSpec
from shared.settings import Settings


def check(spec: RankSpec, settings: Settings, session: Session) -> RankSpec:
    if len(spec.architectures) > settings.search_max_k:
        raise invalid("body.architectures", f"at most {settings.search_max_k} (UNAST_SEARCH_MAX_K)")
    distill = inputs.succeeded_job("body.distill_job", spec.distill_job, "distill", session)
    for i, architecture in enumerate(spec.architectures):
        inputs.learned_architecture(f"body.architectures.{i}", architecture, distill)
    return spec.model_copy(update={"dataset": inputs.dataset("body.dataset", spec.dataset, settings)})


@dataclass(frozen=True)
class Bench:
    """What every architecture of a rank job is built from, finetuned on and measured by: the same for all."""

    spec: RankSpec
    teacher: Decoder
    distill_dir: Path  # the distill job's folder: its candidates
    train: torch.Tensor
    heldout: torch.Tensor
    device: torch.device


def run(ctx: JobContext) -> RankResult:
    spec = RankSpec.model_validate(ctx.spec)
    rank, world = rank_and_world()
    device = job_device(ctx.settings)
    peak = PeakMemory(device)
    distill = ctx.job(spec.distill_job)
    teacher_dir = Path(distill.spec["teacher"])
    teacher = Decoder.from_pretrained(teacher_dir).to(device).eval().requires_grad_(False)
    train, heldout = job_tokens(spec.dataset, teacher_dir)
    bench = Bench(spec, teacher, distill.directory, train, heldout, device)
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
            before, after = short_finetune(ctx, bench, spec.architectures[index], round_=r, rounds=rounds)
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
    return ranked(spec, done, world).model_copy(update={"peak_memory_bytes": peak.per_process()})


def short_finetune(
    ctx: JobContext, bench: Bench, architecture: Architecture, *, round_: int, rounds: int
) -> tuple[Evaluation, Evaluation]:
    """Held-out evaluations of one architecture's student before and after spec.steps of finetuning
    (round `round_` of `rounds`: where the job's progress stands)."""
    spec, device, train, heldout, r = bench.spec, bench.device, bench.train, bench.heldout, round_
    teacher = bench.teacher
    student = load_student(teacher, bench.distill_dir, architecture)
    evaluate = {"batch_size": spec.batch_size, "seq_len": spec.seq_len, "batches": spec.eval_batches}
    before = heldout_loss(student, heldout, device=device, **evaluate)
    optimizer = make_optimizer(student, spec.learning_rate, spec.weight_decay)
    objective = Objective.of(spec)
    cast = functools.partial(autocast, device, ctx.settings.trainer_precision)
    data = torch.Generator().manual_seed(spec.seed)  # every architecture sees the same batches
    logged = time.monotonic()
    for step in range(spec.steps):
        ctx.step(r * spec.steps + step, rounds * spec.steps)
        lr = learning_rate(
            step, steps=spec.steps, lr=spec.learning_rate, min_lr=spec.min_learning_rate, warmup=spec.warmup
        )
        set_learning_rate(optimizer, lr)
        idx, targets = training_batch(train, spec.batch_size, spec.seq_len, data, device)
        loss = train_step(student, optimizer, objective, idx, targets, teacher, cast)
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


KIND = JobKind(name="rank", spec=RankSpec, result=RankResult, run=run, check=check, distributed=True)
