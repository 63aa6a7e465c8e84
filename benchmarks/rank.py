"""Stage 3 on the demo teacher: how well the search's order predicts which architecture trains best.

    .venv/bin/python -m benchmarks.rank --run runs/quality [--k 20] [--steps 50]

From a finished `unast compress` run (its distill job, scores and LUT, at its budget, about half the
teacher's latency), the search returns K architectures; a rank job finetunes each briefly. Printed:
Spearman's correlation between the search's order and the order after the short finetune (the
paper's Fig. 5 and 6 find it near zero), and before it; the spread of the losses after; where the
search's first architecture ends up. Jobs are keyed by their inputs: run again, it reuses them.
"""

import argparse
import statistics
from pathlib import Path

from benchmarks.common import pipeline_run
from services.pipeline import methods
from services.pipeline.stages import search, trainer_job
from shared.schemas.operators import Architecture
from shared.schemas.scores import ScoreTable
from shared.schemas.trainer import RankResult, RankSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="a finished `unast compress` run directory")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    with pipeline_run(args.run, "rank") as (run, done):
        trainer, profiler = run.services.trainer, run.services.profiler
        if (args.k, args.steps) == (run.config.k, run.config.rank_steps):  # the run's own ranking
            ranked = trainer.result(done.stage("unast-rank").job_id)
            assert isinstance(ranked, RankResult)
            return report(run, ranked)
        scores = trainer.result(done.stage("score").job_id)
        assert isinstance(scores, ScoreTable)
        costs = profiler.export(done.stage("profile").lut_id)
        request = methods.search_for(run, scores, costs, k=args.k, depth_only=False)
        searched = search(run, "search", request)
        spec = RankSpec(
            distill_job=done.stage("distill").job_id,
            architectures=[Architecture.model_validate(s) for s in searched.solutions],
            steps=args.steps,
            batch_size=run.config.batch,
            seq_len=run.config.seq_len,
            eval_batches=run.config.eval_batches,
        )
        _, ranked = trainer_job(run, "rank", spec)
        assert isinstance(ranked, RankResult)
    report(run, ranked)


def spearman(rho: float | None) -> str:
    return "n/a" if rho is None else f"{rho:+.3f}"


def report(run, ranked: RankResult) -> None:
    after = [r.loss_after for r in ranked.ranking]
    print(
        f"\n{len(after)} architectures at "
        + ", ".join(str(b.model_dump(exclude_none=True)) for b in run.budgets)
    )
    print(f"short finetune: {ranked.steps} steps of batch {run.config.batch} x {run.config.seq_len}")
    print(f"Spearman, search order vs loss after the short finetune:  {spearman(ranked.spearman)}")
    print(f"Spearman, search order vs loss before it:                 {spearman(ranked.spearman_before)}")
    print(
        f"loss after: best {min(after):.4f}, worst {max(after):.4f}, spread {max(after) - min(after):.4f}, "
        f"std {statistics.pstdev(after):.4f}"
    )
    print(
        f"the search's first architecture ranks {ranked.search_top_rank} of {len(after)} after the finetune"
    )
    print(f"the winner was {ranked.winner_search_rank} in the search's order")


if __name__ == "__main__":
    main()
