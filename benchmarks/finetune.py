"""Stage 4's loss: `lm` vs `kd` vs their mix at equal steps, on the winner of a `unast compress` run
(an architecture at about half the teacher's latency), beside training the teacher itself.

    .venv/bin/python -m benchmarks.finetune --run runs/quick [--steps 300]

For each loss: held-out perplexity after the finetune (against the teacher's), and training
throughput (tokens per second of the training steps, evaluations left out) as a ratio to finetuning
the teacher itself with the same batch and the lm loss, all through the trainer's jobs, one after the
other on the same workers. Jobs are keyed by their inputs: run again, it reuses what it has.
"""

import argparse
from pathlib import Path

from benchmarks.common import pipeline_run
from services.pipeline.compress import evaluate_teacher
from services.pipeline.stages import trainer_job
from shared.schemas.operators import Architecture
from shared.schemas.trainer import FinetuneLoss, FinetuneResult, FinetuneSpec, RankWinner, StudentModel


def finetune_spec(run, model: StudentModel | RankWinner, loss: FinetuneLoss, steps: int) -> FinetuneSpec:
    return FinetuneSpec(
        model=model,
        loss=loss,
        steps=steps,
        eval_every=max(1, steps // 4),
        eval_batches=run.config.eval_batches,
        batch_size=run.config.batch,
        seq_len=run.config.seq_len,
        warmup=max(1, steps // 20),
        checkpoint_every=max(10, steps // 5),
    )


def finetuned(run, stage: str, spec: FinetuneSpec) -> FinetuneResult:
    _, result = trainer_job(run, stage, spec)
    assert isinstance(result, FinetuneResult)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="a finished `unast compress` run directory")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--losses", nargs="+", choices=["lm", "kd", "mix"], default=["lm", "kd", "mix"])
    args = p.parse_args()
    with pipeline_run(args.run, "finetune") as (run, done):
        winner = RankWinner(rank_job=done.stage("unast-rank").job_id)
        results = {
            loss: finetuned(run, f"finetune-{loss}", finetune_spec(run, winner, loss, args.steps))
            for loss in args.losses
        }
        teacher = StudentModel(
            distill_job=done.stage("distill").job_id, architecture=Architecture.teacher(run.shape)
        )
        trained = finetuned(run, "finetune-teacher", finetune_spec(run, teacher, "lm", args.steps))
        teacher_eval = evaluate_teacher(run)

    def speed(result: FinetuneResult) -> float:
        return result.tokens_trained / result.train_seconds

    first = results[args.losses[0]]
    print(f"\narchitecture: {first.architecture.choices}")
    print(
        f"{args.steps} steps of batch {run.config.batch} x {run.config.seq_len}; "
        f"held-out: {first.heldout_tokens} tokens"
    )
    print(f"teacher held-out perplexity: {teacher_eval.perplexity:.2f}")
    print(
        f"{'loss':6s} {'ppl before':>11s} {'ppl after':>10s} {'vs teacher':>11s} {'tokens/s':>9s} "
        f"{'vs teacher training':>20s}"
    )
    for loss, result in results.items():
        print(
            f"{loss:6s} {result.curve[0].perplexity:11.2f} {result.perplexity:10.2f} "
            f"{result.perplexity / teacher_eval.perplexity:10.3f}x {speed(result):9.0f} "
            f"{speed(result) / speed(trained):19.2f}x"
        )
    print(
        f"teacher trained with lm: {speed(trained):.0f} tokens/s (perplexity {trained.perplexity:.2f} after)"
    )


if __name__ == "__main__":
    main()
