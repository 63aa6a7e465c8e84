"""The finetune job (the paper's Stage 4): the chosen architecture trained as a whole model.

A flat loop: warm-up and cosine decay, the loss `lm`, `kd` or their mix (learning/training.py), a
held-out evaluation every `eval_every` steps kept as a curve in the result and the log. Data-parallel
under torchrun (DistributedDataParallel: every rank trains on its rows of the same global batch and
the gradients are averaged; rank 0 logs, evaluates and checkpoints), resumable from its checkpoint.
The model is written as <job dir>/model/ (config.json, model.safetensors, the tokenizer).
"""

import functools
import time

import torch
from sqlalchemy.orm import Session
from torch.nn.parallel import DistributedDataParallel

from services.jobs.checkpoint import restore_optimizer
from services.jobs.context import JobContext
from services.jobs.kind import JobKind
from services.trainer.kinds import inputs
from services.trainer.kinds.model_ref import (
    MODEL_DIR,
    check_model,
    copy_tokenizer,
    load_model,
)
from services.trainer.learning.data import job_tokens
from services.trainer.learning.distributed import job_device, rank_and_world
from services.trainer.learning.peak import PeakMemory
from services.trainer.learning.precision import autocast
from services.trainer.learning.training import (
    LOG_EVERY_S,
    Objective,
    heldout_loss,
    learning_rate,
    make_optimizer,
    rank_rows,
    set_learning_rate,
    train_step,
    training_batch,
)
from shared.costs import parameters
from shared.model import Decoder, write_config
from shared.schemas.trainer import CurvePoint, FinetuneResult, FinetuneSpec
from shared.settings import Settings

SOURCES = {"student", "rank", "scratch"}


def check(spec: FinetuneSpec, settings: Settings, session: Session) -> FinetuneSpec:
    model = check_model("body.model", spec.model, settings, session, SOURCES)
    return spec.model_copy(
        update={"model": model, "dataset": inputs.dataset("body.dataset", spec.dataset, settings)}
    )


def run(ctx: JobContext) -> FinetuneResult:
    spec = FinetuneSpec.model_validate(ctx.spec)
    rank, world = rank_and_world()
    if spec.batch_size % world:
        raise ValueError(f"batch_size {spec.batch_size} does not split over {world} processes")
    device = job_device(ctx.settings)
    peak = PeakMemory(device)
    torch.manual_seed(spec.seed)
    loaded = load_model(ctx, spec.model, device)
    model = loaded.model.train()
    objective = Objective.of(spec)
    cast = functools.partial(autocast, device, ctx.settings.trainer_precision)
    teacher = None
    if objective.needs_teacher:  # the one a student was made from, or loaded now
        teacher = loaded.teacher_model or Decoder.from_pretrained(loaded.teacher).to(device)
        teacher.eval().requires_grad_(False)
    loaded.teacher_model = None  # an lm finetune holds no teacher
    train, heldout = job_tokens(spec.dataset, loaded.directory)
    trained = DistributedDataParallel(model) if world > 1 else model
    optimizer = make_optimizer(model, spec.learning_rate, spec.weight_decay)
    data = torch.Generator().manual_seed(spec.seed)  # the same global batches on every rank
    curve: list[CurvePoint] = []
    start = 0
    if (checkpoint := ctx.load_checkpoint()) is not None:
        model.load_state_dict(checkpoint.model)
        restore_optimizer(optimizer, checkpoint.optimizer)
        data.set_state(checkpoint.extra["data_rng"])
        curve = [CurvePoint.model_validate(p) for p in checkpoint.state["curve"]]
        start = checkpoint.step

    evaluating = 0.0  # seconds spent on held-out evaluations, left out of the training time

    def evaluate(step: int) -> None:
        nonlocal evaluating
        if rank == 0:
            started_eval = time.monotonic()
            ctx.status(f"held-out evaluation at step {step}")
            e = heldout_loss(
                model,
                heldout,
                batch_size=spec.batch_size,
                seq_len=spec.seq_len,
                batches=spec.eval_batches,
                device=device,
            )
            curve.append(CurvePoint(step=step, loss=e.loss, perplexity=e.perplexity))
            ctx.log(f"step {step}/{spec.steps}: held-out loss {e.loss:.4f}, perplexity {e.perplexity:.2f}")
            evaluating += time.monotonic() - started_eval

    if rank == 0:
        ctx.log(f"finetuning with {spec.loss} loss on {world} x {device}, from step {start} of {spec.steps}")
    started = logged = time.monotonic()
    for step in range(start, spec.steps):
        ctx.step(step, spec.steps)
        if step % spec.eval_every == 0 and not any(p.step == step for p in curve):
            evaluate(step)
        lr = learning_rate(
            step, steps=spec.steps, lr=spec.learning_rate, min_lr=spec.min_learning_rate, warmup=spec.warmup
        )
        set_learning_rate(optimizer, lr)
        batch = training_batch(train, spec.batch_size, spec.seq_len, data, device)
        loss = train_step(trained, optimizer, objective, *rank_rows(batch, rank, world), teacher, cast)
        if rank == 0 and time.monotonic() - logged >= LOG_EVERY_S:
            ctx.log(f"step {step + 1}/{spec.steps} lr {lr:.2e} {spec.loss} loss {loss:.4f}")
            logged = time.monotonic()
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < spec.steps and rank == 0:
            ctx.save_checkpoint(
                step=step + 1,
                model=model.state_dict(),
                optimizer=optimizer,
                extra={"data_rng": data.get_state()},
                state={"curve": [p.model_dump() for p in curve]},
            )
    train_seconds = time.monotonic() - started - evaluating
    ctx.step(spec.steps, spec.steps)
    if not any(p.step == spec.steps for p in curve):
        evaluate(spec.steps)
    peaks = peak.per_process()  # a collective: also the barrier before rank 0 writes
    directory = ctx.directory / MODEL_DIR
    if rank == 0:
        model.eval()
        ctx.save_artifact(
            f"{MODEL_DIR}/model", model.hf_state_dict(), {"architecture": model.architecture.model_dump()}
        )
        write_config(directory, model.config())
        copy_tokenizer(loaded.directory, directory)
    final = curve[-1] if curve else CurvePoint(step=spec.steps, loss=float("nan"), perplexity=float("nan"))
    return FinetuneResult(
        architecture=model.architecture,
        teacher=str(loaded.teacher),
        lineage=loaded.lineage,
        curve=curve,
        loss=final.loss,
        perplexity=final.perplexity,
        heldout_tokens=spec.eval_batches * spec.batch_size * spec.seq_len,
        tokens_trained=spec.steps * spec.batch_size * spec.seq_len,
        params=parameters(model.architecture, model.shape),
        model_dir=str(directory),
        train_seconds=train_seconds,
        world_size=world,
        peak_memory_bytes=peaks,
    )


KIND = JobKind(
    name="finetune", spec=FinetuneSpec, result=FinetuneResult, run=run, check=check, distributed=True
)
