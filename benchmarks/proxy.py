"""Scores only where the search could pick them (issue 19): the distill job's held-out NMSE as a free
first pass, exact scores only for the pairs it leaves. How much scoring it saves, and how the search's
answer changes.

    scripts/run compress --model models/shakespeare-teacher --latency 0.5 \
        --config benchmarks/proxy-demo.json --out runs/proxy      # README's figures, about 20 minutes
    .venv/bin/python -m benchmarks.proxy --run runs/proxy [--k 10]

From a finished `unast compress` run (its distill job's held-out NMSE, its score table and LUT, at its
budgets). A candidate is *dominated* in its slot when another candidate of the slot is at least as good
on NMSE and on every cost a budget constrains, and better on one: no search at these budgets that
believed the NMSE order could want it, so the first pass would score only the undominated pairs.
Printed: Spearman's correlation between NMSE and score within each slot; the share of pairs left to
score; and the search's K architectures with the dominated candidates excluded vs the run's full
search, both judged on the exact scores: the first architecture's objective and the K's mean, how
many of the full search's choices the pruning removed, and how many architectures the two answers
share. As a control, the same with candidates dominated on the exact score (what an oracle could
prune: the K diverse architectures may still need some of them).
"""

import argparse
from pathlib import Path

from benchmarks.common import pipeline_run
from services.pipeline import methods
from services.pipeline.stages import search
from services.trainer.learning.stats import spearman
from shared.schemas.scores import ScoreTable
from shared.schemas.search import SearchRequest, SearchResponse, Slot
from shared.schemas.trainer import DistillResult


def budgeted(request: SearchRequest) -> list[str]:
    """The per-candidate costs the request's budgets constrain (a derived cost's parts)."""
    names = {part for b in request.budgets for part in request.derived_costs.get(b.cost, [b.cost])}
    return sorted(names)


def dominated(slot: Slot, quality: dict[str, float], costs: list[str]) -> set[str]:
    """The slot's candidates that another one matches or beats on `quality` (lower is better) and on
    each of `costs`, beating it on one of them."""
    open_ = [c for c in slot.candidates if c.id not in slot.exclude]

    def figures(c) -> list[float]:
        return [quality[c.id], *(c.costs[name] for name in costs)]

    out = set()
    for c in open_:
        mine = figures(c)
        for other in open_:
            theirs = figures(other)
            if other is not c and all(t <= m for t, m in zip(theirs, mine, strict=True)) and theirs != mine:
                out.add(c.id)
                break
    return out


def pruned(request: SearchRequest, quality: dict[str, dict[str, float]]) -> tuple[SearchRequest, int, int]:
    """The request with each slot's dominated candidates excluded; (request, pairs left, pairs before)."""
    out = request.model_copy(deep=True)
    costs = budgeted(request)
    left = before = 0
    for slot in out.slots:
        drop = dominated(slot, quality[slot.id], costs)
        before += len(slot.candidates) - len(slot.exclude)
        slot.exclude = [*slot.exclude, *sorted(drop)]
        left += len(slot.candidates) - len(slot.exclude)
    return out, left, before


def compare(name: str, full: SearchResponse, found: SearchResponse, left: int, before: int) -> None:
    first, best = found.solutions[0], full.solutions[0]
    mean = sum(s.objective for s in found.solutions) / len(found.solutions)
    full_mean = sum(s.objective for s in full.solutions) / len(full.solutions)
    full_choices = {(slot, c) for s in full.solutions for slot, c in s.choices.items()}
    kept = {(slot, c) for s in found.solutions for slot, c in s.choices.items()}
    shared = {tuple(sorted(s.choices.items())) for s in full.solutions} & {
        tuple(sorted(s.choices.items())) for s in found.solutions
    }
    print(
        f"| {name} | {left} of {before} ({left / before:.0%}) | {first.objective:.4f} "
        f"({first.objective - best.objective:+.4f}) | {mean:.4f} ({mean - full_mean:+.4f}) "
        f"| {len(full_choices - kept)} of {len(full_choices)} "
        f"| {len(shared)} of {len(full.solutions)} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished `unast compress` run directory")
    p.add_argument("--k", type=int, default=None, help="architectures per search (the run's K)")
    args = p.parse_args()
    with pipeline_run(args.run, "proxy") as (run, done):
        trainer, profiler = run.services.trainer, run.services.profiler
        distilled = trainer.result(done.stage("distill").job_id)
        scores = trainer.result(done.stage("score").job_id)
        assert isinstance(distilled, DistillResult) and isinstance(scores, ScoreTable)
        costs = profiler.export(done.stage("profile").lut_id)
        request = methods.search_for(run, scores, costs, k=args.k or run.config.k, depth_only=False)
        nmse = {slot.id: distilled.heldout_nmse[slot.id] for slot in request.slots}
        exact = {slot.id: {c.id: c.score for c in slot.candidates} for slot in request.slots}

        rho = []
        for slot in request.slots:
            ids = [c.id for c in slot.candidates if c.id not in slot.exclude]
            rho.append(spearman([nmse[slot.id][i] for i in ids], [exact[slot.id][i] for i in ids]))
        known = [r for r in rho if r is not None]
        print(
            f"\nSpearman(NMSE, score) within a slot, over {len(known)} slots: "
            f"mean {sum(known) / len(known):+.3f}, worst {min(known):+.3f}, best {max(known):+.3f}"
        )

        full = search(run, "search-full", request)
        print(
            f"\nthe search's K={request.k} architectures at "
            + ", ".join(str(b.model_dump(exclude_none=True)) for b in run.budgets)
        )
        print(
            "\n| pruned by | pairs scored exactly | first objective (vs full) | mean of the K (vs full) | "
            "full's choices removed | architectures shared |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for name, quality in (("NMSE + costs (the proxy)", nmse), ("exact score + costs (oracle)", exact)):
            request_, left, before = pruned(request, quality)
            compare(name, full, search(run, f"search-{name.split()[0]}", request_), left, before)


if __name__ == "__main__":
    main()
