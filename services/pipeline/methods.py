"""From scores and costs to finetuned models: full UNAST and the baselines beside it, at one budget, with
the same finetune steps, data and evaluation (the paper's Table 9 and Appendix E on our model).

- unast: the whole pool through the search (K architectures), ranked by a short finetune (Stage 3),
  the winner finetuned (Stage 4) and exported.
- unast-depth: the pool {teacher, identity} per slot through the same search and ranking.
- depth: depth pruning as Shortened LLaMA does it (the paper's Table 9): the {teacher, identity} pool,
  the best architecture by summed score, no short-finetune ranking.
- uniform: every block the same, its attention and its MLP shrunk by the same fraction of the teacher's
  size, within 0.05 (the pool's operators and the uniform ladder's, in steps of 1/40; distilled like
  the others, no search): the pair of the largest latency that meets the budgets, so that it uses its
  budget as the others do.
- scratch (with `scratch` in the configuration): UNAST's architecture from random weights, trained by
  lm loss on the same data with SCRATCH_TOKENS times the tokens the compression trained UNAST's model
  on (distill, scores, rank, finetune), with the demo teacher's own recipe: the paper's claim that
  compressing costs about a tenth of training the smaller model from scratch, measured.
- unast (nemotron-nas), in the default format beside unast: the same search, ranking and finetune over
  the servable pool (what the DeciLM / Nemotron-NAS form expresses), from the same distill job: what
  serving in that form costs at the same budget. With `--format nemotron-nas` every method keeps to
  the servable pool.
"""

import math
from dataclasses import dataclass

from services.pipeline.record import digest
from services.pipeline.stages import PipelineError, Run, search, trainer_job
from shared.candidates import uniform_ladder
from shared.decilm import Format
from shared.schemas.lut import CostTable
from shared.schemas.operators import (
    Architecture,
    is_teacher,
    operator_from_name,
    parse_slot_id,
    slot_id,
    spec_name,
)
from shared.schemas.scores import ScoreTable
from shared.schemas.search import SearchRequest, SearchResponse
from shared.schemas.trainer import (
    FinetuneResult,
    FinetuneSpec,
    RankResult,
    RankSpec,
    RankWinner,
    ScratchModel,
    StudentModel,
)
from shared.search_input import architecture_costs, search_request

METHODS = ("unast", "unast-depth", "depth", "uniform")
SERVABLE_ROW = "unast (nemotron-nas)"
SERVABLE_STAGE = "unast-nas"  # its stages' names: unast-nas-search, -rank, -finetune


@dataclass
class Method:
    name: str
    architecture: Architecture
    stage: str | None = None  # what its stages are named after, when not its name
    rank_job: str | None = None
    ranked: RankResult | None = None
    searched: SearchResponse | None = None
    finetune_job: str | None = None
    finetuned: FinetuneResult | None = None


def search_for(
    run: Run,
    scores: ScoreTable,
    costs: CostTable,
    *,
    k: int,
    depth_only: bool,
    format: Format | None = None,
) -> SearchRequest:
    """The search over the pool of `format` (the run's by default): the distill job may have learned
    more (every format's pool), the rest is excluded; depth_only: the {teacher, identity} pool. The
    request names the format, so the search itself keeps to what it expresses."""
    format = format or run.format
    pool = {slot: {spec_name(op) for op in ops} for slot, ops in run.pools[format].items()}
    request = search_request(
        scores,
        costs,
        budgets=run.budgets,
        k=k,
        max_overlap=0.7,
        time_limit_s=run.config.search_time_limit_s,
        format=format,
    )
    for slot in request.slots:
        if depth_only:
            slot.exclude = [c.id for c in slot.candidates if not c.reference and c.id != "identity"]
        else:
            slot.exclude = [c.id for c in slot.candidates if c.id not in pool[slot.id]]
    return request


def finetune(run: Run, method: Method, distill_job: str) -> Method:
    """Stage 4 for one method: the same steps, data and evaluation for every method."""
    if method.rank_job is not None:
        model: RankWinner | StudentModel = RankWinner(rank_job=method.rank_job)
    else:
        model = StudentModel(distill_job=distill_job, architecture=method.architecture)
    spec = FinetuneSpec(
        model=model,
        steps=run.config.finetune_steps,
        eval_every=run.config.eval_every,
        eval_batches=run.config.eval_batches,
        batch_size=run.config.batch,
        seq_len=run.config.seq_len,
        loss=run.config.loss,
        warmup=max(1, run.config.finetune_steps // 20),
        checkpoint_every=max(10, run.config.finetune_steps // 5),
    )
    stage = f"{method.stage or method.name}-finetune"
    method.finetune_job, method.finetuned = trainer_job(run, stage, spec)
    run.record.update(stage, perplexity=method.finetuned.perplexity)
    return method


def rank(run: Run, name: str, distill_job: str, searched: SearchResponse, stage: str | None = None) -> Method:
    """Stage 3: the search's architectures, as it returned them, ranked by a short finetune."""
    spec = RankSpec(
        distill_job=distill_job,
        # the search's solutions as it returned them: an Architecture takes one as it is
        architectures=[Architecture.model_validate(s) for s in searched.solutions],
        steps=run.config.rank_steps,
        batch_size=run.config.batch,
        seq_len=run.config.seq_len,
        eval_batches=run.config.eval_batches,
    )
    stage_name = f"{stage or name}-rank"
    job_id, ranked = trainer_job(run, stage_name, spec)
    run.record.update(stage_name, spearman=ranked.spearman, winner_search_rank=ranked.winner_search_rank)
    return Method(
        name=name, architecture=ranked.winner, stage=stage, rank_job=job_id, ranked=ranked, searched=searched
    )


def unast(run: Run, distill_job: str, scores: ScoreTable, costs: CostTable, *, depth_only: bool) -> Method:
    name = "unast-depth" if depth_only else "unast"
    searched = search(
        run, f"{name}-search", search_for(run, scores, costs, k=run.config.k, depth_only=depth_only)
    )
    if not searched.solutions:
        raise PipelineError(f"{name}: the search found no architecture: {searched.message}")
    return finetune(run, rank(run, name, distill_job, searched), distill_job)


def servable(run: Run, distill_job: str, scores: ScoreTable, costs: CostTable) -> tuple[Method | None, str]:
    """The default format's servable row: UNAST over the nemotron-nas pool, from the same distill job.
    (None, why) when no architecture of that pool meets the budgets: the run goes on without it."""
    request = search_for(run, scores, costs, k=run.config.k, depth_only=False, format="nemotron-nas")
    try:
        searched = search(run, f"{SERVABLE_STAGE}-search", request)
    except PipelineError as exc:  # the search's infeasible: the budgets are out of the pool's reach
        return None, f"no architecture the nemotron-nas form expresses meets the budgets ({exc})"
    if not searched.solutions:
        return None, f"the nemotron-nas search found no architecture: {searched.message}"
    ranked = rank(run, SERVABLE_ROW, distill_job, searched, stage=SERVABLE_STAGE)
    return finetune(run, ranked, distill_job), ""


def depth(run: Run, distill_job: str, scores: ScoreTable, costs: CostTable) -> Method:
    searched = search(run, "depth-search", search_for(run, scores, costs, k=1, depth_only=True))
    architecture = Architecture.model_validate(searched.solutions[0])
    return finetune(run, Method(name="depth", architecture=architecture, searched=searched), distill_job)


LATENCY = "latency_ms"  # the run's own LUT's latency, as the cost table names it
NEAR = 0.05  # a baseline this close under its latency budget is compared at matched latency


@dataclass
class UniformChoice:
    architecture: Architecture | None
    fraction: float | None  # of the teacher's size
    share: float | None  # of the latency budget its LUT latency uses


def uniform_pairs(run: Run) -> list[tuple[float, str, str]]:
    """(fraction, attention, MLP) the uniform baseline may give every block: an attention and an MLP of
    equal fraction of the teacher's size (within 0.05), from the pool and, in the default format, the
    uniform ladder (shared/candidates.py; the nemotron-nas form expresses no rung). The ladder's rungs
    mixed with their neighbours make latency steps fine enough to use any budget within 5%, however
    the device's timings fall (a rung's attention changes its KV heads in one jump)."""
    shrunk: dict[str, dict[str, float]] = {"attention": {}, "mlp": {}}
    operators = [(parse_slot_id(slot)[1], op) for slot, ops in run.pools[run.format].items() for op in ops]
    if run.format == "unast":
        operators += [
            (t, op) for _, a, m in uniform_ladder(run.shape) for t, op in (("attention", a), ("mlp", m))
        ]
    for slot_type, op in operators:
        fraction = size_fraction(op, run.shape)
        if fraction is not None and not is_teacher(op, run.shape, slot_type):
            shrunk[slot_type][spec_name(op)] = fraction
    return [
        (min(fa, fm), attention, mlp)
        for attention, fa in shrunk["attention"].items()
        for mlp, fm in shrunk["mlp"].items()
        if abs(fa - fm) <= 0.05
    ]


def size_fraction(operator, shape) -> float | None:
    """How much of the teacher's size an attention or MLP operator keeps: query heads x head size, or
    MLP width (None for identity and linear, which are no shrunk copy of the teacher's)."""
    if operator.kind == "attention":
        return operator.num_heads * operator.head_dim / (shape.num_heads * shape.head_dim)
    if operator.kind == "mlp":
        return operator.intermediate_size / shape.intermediate_size
    return None


def uniform_choice(run: Run, costs: CostTable) -> UniformChoice:
    """Every block the same, its attention and MLP shrunk alike: of `uniform_pairs` that the LUTs cost,
    the one of the largest LUT latency that meets the budgets (every regime's: the profiler's estimate,
    summed). Chosen before distillation, which then learns its two operators for every slot."""
    stage = "uniform-choice"
    key = digest(stage, costs.model_dump(), [b.model_dump() for b in run.budgets], run.format)
    if (done := run.record.reusable(stage, key)) is not None:
        return UniformChoice(done.architecture, done.fraction, done.share)
    run.record.start(stage, key)
    teacher_costs = architecture_costs(costs, Architecture.teacher(run.shape))
    costed = {c.id for slot in costs.slots for c in slot.candidates}
    best = None
    for fraction, attention, mlp in uniform_pairs(run):
        if attention not in costed or mlp not in costed:  # a LUT built before the ladder was measured
            continue
        choices = {}
        for layer in range(run.shape.num_layers):
            choices[slot_id(layer, "attention")], choices[slot_id(layer, "mlp")] = attention, mlp
        architecture = Architecture(choices=choices)
        estimate = architecture_costs(costs, architecture)
        if _within(run, estimate, teacher_costs) and (best is None or estimate[LATENCY] > best[0]):
            best = (estimate[LATENCY], fraction, architecture)
    if best is None:
        run.record.finish(stage, architecture=None)
        return UniformChoice(None, None, None)
    limit = latency_limit(run, teacher_costs)
    share = best[0] / limit if limit else None
    run.record.finish(stage, architecture=best[2].model_dump(), fraction=best[1], share=share)
    return UniformChoice(best[2], best[1], share)


def latency_limit(run: Run, teacher: dict[str, float]) -> float | None:
    """The run's own latency budget, in ms (None when no budget bounds it)."""
    for budget in run.budgets:
        if budget.cost == LATENCY:
            return budget.limit(teacher[LATENCY])
    return None


def budget_note(name: str, share: float | None) -> str | None:
    """The report's line for a method more than NEAR under its latency budget: faster than the others,
    so not compared with them at matched latency. None for one that uses its budget."""
    if share is None or share >= 1 - NEAR:
        return None
    return (
        f"{name} uses {share:.0%} of its latency budget: it cannot come within {NEAR:.0%} of it, so it "
        "is faster than the methods that do and is not compared with them at matched latency."
    )


def uniform(run: Run, distill_job: str, choice: UniformChoice) -> Method | None:
    """The uniform baseline: its choice, finetuned as every method is (None when nothing met the budgets)."""
    if choice.architecture is None:
        return None
    return finetune(run, Method(name="uniform", architecture=choice.architecture), distill_job)


def _within(run: Run, estimate: dict[str, float], teacher: dict[str, float]) -> bool:
    for budget in run.budgets:
        limit = budget.limit(teacher[budget.cost])
        if estimate[budget.cost] > limit * (1 + 1e-9):
            return False
    return True


SCRATCH_TOKENS = 10  # the paper: compressing costs about a tenth of training from scratch
SCRATCH_STAGES = ("distill", "score", "unast-rank", "unast-finetune")  # what UNAST's model was trained by


@dataclass
class Spent:
    """What one stage spent on the model: tokens it trained on (held-out tokens for the scores, which
    every candidate reads) and its wall time, s (None before the stage has run)."""

    stage: str
    tokens: int
    wall_s: float | None


def compression_spent(run: Run, unast: Method, scores: ScoreTable) -> list[Spent]:
    """The tokens and time the compression spent training UNAST's model, stage by stage. The distill
    job also learns the baselines' candidates: its time counts them too."""
    config = run.config
    ranked = len(unast.ranked.ranking) if unast.ranked else 0
    tokens = {
        "distill": config.distill_steps * config.distill_batch * config.seq_len,
        "score": scores.tokens,
        "unast-rank": ranked * config.rank_steps * config.batch * config.seq_len,
        "unast-finetune": unast.finetuned.tokens_trained,
    }
    return [Spent(stage, tokens[stage], run.record.stage(stage).wall_s) for stage in SCRATCH_STAGES]


def scratch(run: Run, unast: Method, spent: list[Spent]) -> Method:
    """UNAST's architecture from random weights, trained on SCRATCH_TOKENS times the compression's
    tokens by lm loss with the demo teacher's recipe (models/shakespeare-teacher/training.json: AdamW,
    1e-3 decaying to 1e-4, a fifteenth of the steps warm-up, weight decay 0.1)."""
    tokens = SCRATCH_TOKENS * sum(s.tokens for s in spent)
    steps = math.ceil(tokens / (run.config.batch * run.config.seq_len))
    spec = FinetuneSpec(
        model=ScratchModel(teacher=str(run.teacher), architecture=unast.architecture),
        steps=steps,
        eval_every=max(1, steps // 10),
        eval_batches=run.config.eval_batches,
        batch_size=run.config.batch,
        seq_len=run.config.seq_len,
        loss="lm",
        learning_rate=1e-3,
        min_learning_rate=1e-4,
        warmup=max(1, steps // 15),
        weight_decay=0.1,
        checkpoint_every=max(10, steps // 20),
    )
    method = Method(name="scratch", architecture=unast.architecture)
    method.finetune_job, method.finetuned = trainer_job(run, "scratch", spec)
    run.record.update("scratch", perplexity=method.finetuned.perplexity)
    return method


def teacher_like(architecture: Architecture, shape) -> list[bool]:
    """Per slot, whether it kept the teacher's operator (the report hatches those)."""
    return [
        is_teacher(operator_from_name(cid), shape, parse_slot_id(slot)[1])
        for slot, cid in architecture.choices.items()
    ]
