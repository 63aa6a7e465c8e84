"""How noisy are the scores (the paper's e_ij), and how many held-out tokens make their ranking stable?

    .venv/bin/python -m benchmarks.score_noise --run runs/quality [--batches 128]

A score job (the run's own; or, with --batches, one over that many held-out batches on the run's
distill job) keeps every batch's summed loss of the teacher and of each (slot, candidate). From the
first n batches, for growing n: the scores' paired standard error (over batches, candidate minus
teacher on the same batch), how many scores fall below zero (a candidate 'better' than the teacher:
noise, for any real replacement), and the half-split rank stability: Spearman's correlation between a
slot's candidate scores from the first and from the second half of those n batches, averaged over the
slots. The score job's default evaluation size is chosen from this table.
"""

import argparse
from pathlib import Path

import numpy as np
from safetensors.numpy import load

from benchmarks.common import pipeline_run
from services.pipeline.stages import trainer_job
from services.trainer.kinds.score import BATCH_LOSSES
from services.trainer.learning.stats import spearman
from shared.schemas.scores import ScoreTable
from shared.schemas.trainer import ScoreSpec


def stability(first: np.ndarray, second: np.ndarray, slots: dict[str, list[int]]) -> tuple[float, float]:
    """(mean, worst) over slots of Spearman's correlation between the two halves' candidate scores."""
    rho = [
        spearman(first.mean(axis=0)[idx], second.mean(axis=0)[idx]) for idx in slots.values() if len(idx) > 1
    ]
    rho = [r for r in rho if r is not None]
    return (float(np.mean(rho)), float(np.min(rho))) if rho else (float("nan"), float("nan"))


def table(sums: np.ndarray, columns: list[str], tokens_per_batch: int, sizes: list[int]) -> list[dict]:
    slots: dict[str, list[int]] = {}
    for i, name in enumerate(columns[1:]):
        slots.setdefault(name.split("/")[0], []).append(i)
    rows = []
    for n in sizes:
        changes = (sums[:n, 1:] - sums[:n, :1]) / tokens_per_batch
        score = changes.mean(axis=0)
        stderr = changes.std(axis=0, ddof=1) / np.sqrt(n)
        contiguous = stability(changes[: n // 2], changes[n // 2 :], slots)
        interleaved = stability(changes[0::2], changes[1::2], slots)
        rows.append(
            {
                "batches": n,
                "tokens": n * tokens_per_batch,
                "median_stderr": float(np.median(stderr)),
                "negative": float((score < 0).mean()),
                "median_z": float(np.median(np.abs(score) / np.maximum(stderr, 1e-12))),
                "contiguous": contiguous,
                "interleaved": interleaved,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="a finished `unast compress` run directory")
    p.add_argument("--batches", type=int, help="held-out batches of a score job of the study's own")
    args = p.parse_args()
    with pipeline_run(args.run, "score-noise") as (run, done):
        trainer = run.services.trainer
        job_id = done.stage("score").job_id
        if args.batches is not None:
            spec = ScoreSpec(
                distill_job=done.stage("distill").job_id,
                batch_size=run.config.batch,
                seq_len=run.config.seq_len,
                eval_batches=args.batches,
                checkpoint_every=8,
            )
            job_id, _ = trainer_job(run, "score", spec)
        result = trainer.result(job_id)
        assert isinstance(result, ScoreTable)
        (artifact,) = [a for a in trainer.artifacts(job_id) if a.name == BATCH_LOSSES]
        losses = args.run / "benchmarks" / "score-noise" / f"{job_id}-{BATCH_LOSSES}.safetensors"
        trainer.download(job_id, f"{BATCH_LOSSES}.safetensors", losses)
    sums = load(losses.read_bytes())["sums"]
    batches = len(sums)
    sizes = sorted({n for n in (4, 8, 16, 32, 64, 128, 256) if n <= batches} | {batches})
    rows = table(sums, artifact.meta["columns"], artifact.meta["tokens_per_batch"], sizes)
    pairs = len(artifact.meta["columns"]) - 1
    print(f"\n{pairs} (slot, candidate) pairs; batches of {run.config.batch} x {run.config.seq_len}")
    print(f"teacher held-out loss {result.teacher_loss:.4f}")
    print("half-split rho: mean (worst slot) of Spearman's rho between the halves' candidate scores;")
    print("first vs second half (other text: other plays) and even vs odd batches (the same text).")
    header = f"{'batches':>7s} {'tokens':>8s} {'median SE':>10s} {'|score|/SE':>10s} {'< 0':>6s}"
    print(header + f" {'first/second':>15s} {'even/odd':>15s}")
    for r in rows:
        print(
            f"{r['batches']:7d} {r['tokens']:8d} {r['median_stderr']:10.5f} {r['median_z']:10.1f} "
            f"{r['negative']:6.1%} {r['contiguous'][0]:8.3f} ({r['contiguous'][1]:.2f}) "
            f"{r['interleaved'][0]:8.3f} ({r['interleaved'][1]:.2f})"
        )


if __name__ == "__main__":
    main()
