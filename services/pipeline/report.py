"""runs/NAME/report.md and its figures (matplotlib, Agg: PNG files, no display needed)."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from services.pipeline.methods import NEAR, SCRATCH_TOKENS, Method, Spent
from services.pipeline.record import StageRecord
from shared.schemas.lut import Estimate, Lut, Validation
from shared.schemas.operators import Architecture, AttentionOp, MLPOp, is_teacher
from shared.schemas.search import Budget, SweepPoint
from shared.schemas.shape import ModelShape
from shared.schemas.trainer import CurvePoint, ExportResult

FIGURES = "figures"
MIB = 2**20


@dataclass
class Row:
    """One line of the report's table."""

    name: str
    architecture: Architecture
    estimate: Estimate
    measured_ms: float | None
    ppl_before: float
    ppl_after: float
    curve: list[CurvePoint] = field(default_factory=list)
    # per target other than the run's own LUT (ttft, decode): (LUT latency ms, measured ms)
    targets: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    # every other budgeted cost (ttft.memory_bytes, a device's params, ...): its value by the LUTs
    budgeted: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    out: Path
    shape: ModelShape
    teacher: Path
    device: str
    budgets: list[Budget]
    config: dict[str, Any]
    lut: Lut
    lut_check: Validation  # of random architectures
    rows: list[Row]  # the teacher first
    unast: Method
    sweep: list[SweepPoint]
    stages: dict[str, StageRecord]  # the run's record of its stages (run.json)
    export: ExportResult | None
    notes: list[str] = field(default_factory=list)
    format: str = "unast"  # --format
    form: list[str] = field(default_factory=list)  # serving in the nemotron-nas form (servable.py)
    plotted: tuple[str, float] = ("latency_ms", 0.0)  # the binding latency the figures plot, the teacher's
    data: list[str] = field(default_factory=list)  # the data and its tokens per split (data.py)
    latency_budget_ms: float | None = None  # the run's own latency budget (methods.latency_limit)
    # with a scratch row: what each stage that trained UNAST's model spent, then the scratch training
    spent: list[Spent] = field(default_factory=list)


def write(report: Report) -> Path:
    figures = report.out / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    names = [
        architecture_figure(report, figures / "architecture.png"),
        search_figure(report, figures / "search.png"),
        rank_figure(report, figures / "rank.png"),
        latency_figure(report, figures / "latency.png"),
        curves_figure(report, figures / "finetune.png"),
    ]
    path = report.out / "report.md"
    path.write_text(markdown(report, [n for n in names if n]))
    return path


# -- figures ---------------------------------------------------------------------------------------


def architecture_figure(report: Report, path: Path) -> str:
    """The chosen architecture block by block, as a share of the teacher's sizes; hatched: the slot
    kept the teacher's operator (the paper's Fig. 7)."""
    shape, layers = report.shape, report.unast.architecture.layers
    blocks = range(len(layers))
    fig, (ax_a, ax_m) = plt.subplots(1, 2, figsize=(11, 3.6))
    width = 0.27
    series = [
        ("heads", lambda op: op.num_heads / shape.num_heads),
        ("KV heads", lambda op: op.num_kv_heads / shape.num_kv_heads),
        ("head dim", lambda op: op.head_dim / shape.head_dim),
    ]
    for k, (label, share) in enumerate(series):
        values, hatches = [], []
        for layer in layers:
            op = layer.attention
            values.append(share(op) if isinstance(op, AttentionOp) else 0.0)
            hatches.append("//" if is_teacher(op, shape, "attention") else "")
        bars = ax_a.bar([b + (k - 1) * width for b in blocks], values, width, label=label)
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
    for b, layer in zip(blocks, layers, strict=True):
        if not isinstance(layer.attention, AttentionOp):
            ax_a.text(b, 0.03, layer.attention.kind, ha="center", rotation=90, fontsize=8)
    ax_a.set(title="attention (share of the teacher's)", xlabel="block", ylim=(0, 1.1), xticks=list(blocks))
    ax_a.legend(fontsize=8)
    values = [
        layer.mlp.intermediate_size / shape.intermediate_size if isinstance(layer.mlp, MLPOp) else 0
        for layer in layers
    ]
    bars = ax_m.bar(list(blocks), values, 0.6, color="tab:green")
    for bar, layer in zip(bars, layers, strict=True):
        bar.set_hatch("//" if is_teacher(layer.mlp, shape, "mlp") else "")
    for b, layer in zip(blocks, layers, strict=True):
        if not isinstance(layer.mlp, MLPOp):
            ax_m.text(b, 0.03, layer.mlp.kind, ha="center", rotation=90, fontsize=8)
    ax_m.set(title="MLP width (share of the teacher's)", xlabel="block", ylim=(0, 1.1), xticks=list(blocks))
    fig.suptitle("UNAST's architecture (hatched: the teacher's own operator)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def search_figure(report: Report, path: Path) -> str | None:
    """Score vs predicted latency of the K architectures, the budget, and the best score at each latency."""
    searched = report.unast.searched
    if searched is None or not searched.solutions:
        return None
    cost, teacher_ms = report.plotted
    teacher_ms = teacher_ms or report.rows[0].estimate.latency_ms
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter(
        [s.costs[cost] for s in searched.solutions],
        [s.objective for s in searched.solutions],
        label=f"the K={len(searched.solutions)} architectures",
    )
    solutions = [p.solution for p in report.sweep if p.solution is not None]
    if solutions:
        ax.plot(
            [s.costs[cost] for s in solutions],
            [s.objective for s in solutions],
            "k.-",
            alpha=0.6,
            label="best at each latency budget (sweep)",
        )
    for budget in report.budgets:
        if budget.cost == cost:
            limit = budget.limit(teacher_ms)
            ax.axvline(limit, color="tab:red", ls="--", label=f"budget {limit:.2f} ms")
    ax.set(
        xlabel=f"predicted {cost}, whole model (ms, LUT): the binding latency",
        ylabel="summed score (loss change)",
        title="Search: score vs predicted latency",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def budget_text(budget: Budget) -> str:
    if budget.fraction is not None:
        return f"{budget.cost} {budget.fraction:g} of the teacher's"
    return f"{budget.cost} at most {budget.max:g}"


def rank_figure(report: Report, path: Path) -> str | None:
    """Search order vs held-out loss after the short finetune (the paper's Fig. 5), with Spearman's rho."""
    ranked = report.unast.ranked
    if not ranked:
        return None
    entries = sorted(ranked.ranking, key=lambda r: r.search_rank)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.scatter([r.search_rank for r in entries], [r.loss_before for r in entries], alpha=0.35, label="before")
    ax.scatter(
        [r.search_rank for r in entries],
        [r.loss_after for r in entries],
        label=f"after {ranked.steps} steps",
    )
    rho = ranked.spearman
    ax.set(
        xlabel="position in the search's order",
        ylabel="held-out loss",
        title=f"Short-finetune ranking: Spearman {rho:+.2f}" if rho is not None else "Short-finetune ranking",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def latency_figure(report: Report, path: Path) -> str:
    """LUT-predicted vs measured latency: random architectures (the LUT's check) and the models made."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    check = report.lut_check.architectures
    ax.scatter(
        [a.measured.p10_ms for a in check],
        [a.predicted_ms for a in check],
        alpha=0.4,
        label="random architectures",
    )
    for row in report.rows:
        if row.measured_ms is not None:
            ax.scatter([row.measured_ms], [row.estimate.latency_ms], marker="*", s=120, label=row.name)
    lo = min([a.measured.p10_ms for a in check] + [r.measured_ms or math.inf for r in report.rows]) * 0.9
    hi = max([a.measured.p10_ms for a in check] + [r.measured_ms or 0 for r in report.rows]) * 1.1
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set(xlabel="measured (ms)", ylabel="LUT-predicted (ms)", title="LUT prediction vs measurement")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def curves_figure(report: Report, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for row in report.rows[1:]:
        if row.curve:
            ax.plot([p.step for p in row.curve], [p.perplexity for p in row.curve], "o-", label=row.name)
    ax.axhline(report.rows[0].ppl_after, color="k", ls="--", label="teacher")
    ax.set(
        xlabel="finetune step", ylabel="held-out perplexity", title="Final finetune (Stage 4)", yscale="log"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# -- the text -------------------------------------------------------------------------------------


def describe(architecture: Architecture, shape: ModelShape) -> str:
    kept = sum(is_teacher(op, shape, t) for _, t, op in architecture.slots())
    skipped = sum(op.kind == "identity" for _, _, op in architecture.slots())
    linear = sum(op.kind == "linear" for _, _, op in architecture.slots())
    return f"{kept} teacher / {skipped} skipped / {linear} linear of {len(architecture.choices)} slots"


CAPTIONS = {
    "architecture.png": "The chosen architecture, block by block",
    "search.png": "Score vs predicted latency of the K architectures, the budget, the sweep's Pareto curve",
    "rank.png": "Search order vs held-out loss after the short finetune",
    "latency.png": "LUT-predicted vs measured latency",
    "finetune.png": "Finetune curves of UNAST and the baselines",
}
COLUMNS = (
    "model",
    "architecture",
    "ppl before finetune",
    "ppl after",
    "LUT latency ms",
    "of budget",
    "measured ms",
    "memory MiB",
    "params",
    "speed-up (LUT)",
    "speed-up (measured)",
)


def table_row(row: Row, teacher: Row, shape: ModelShape, budget_ms: float | None) -> str:
    measured = f"{row.measured_ms:.3f}" if row.measured_ms is not None else "-"
    share = "-"
    if budget_ms:  # one more than NEAR under its budget is not at matched latency: its row says so
        fraction = row.estimate.latency_ms / budget_ms
        share = f"{fraction:.0%}" + (" (short)" if row.name != "teacher" and fraction < 1 - NEAR else "")
    measured_speed = "-"
    if row.measured_ms and teacher.measured_ms:
        measured_speed = f"{teacher.measured_ms / row.measured_ms:.2f}x"
    cells = [
        row.name,
        describe(row.architecture, shape),
        f"{row.ppl_before:.2f}",
        f"{row.ppl_after:.2f}",
        f"{row.estimate.latency_ms:.3f}",
        share,
        measured,
        f"{row.estimate.memory_bytes / MIB:.2f}",
        f"{row.estimate.params:,}",
        f"{teacher.estimate.latency_ms / row.estimate.latency_ms:.2f}x",
        measured_speed,
    ]
    for predicted, measured in row.targets.values():  # the other regimes' latencies, in name order
        cells += [f"{predicted:.3f}", f"{measured:.3f}" if measured is not None else "-"]
    for cost, value in row.budgeted.items():
        cells.append(f"{value / MIB:.2f}" if cost.endswith("bytes") else f"{value:,.0f}")
    return "| " + " | ".join(cells) + " |"


def columns(report: "Report") -> list[str]:
    """The table's columns: the run's own LUT's, then each other target's LUT and measured latency."""
    others = [(f"{name} LUT ms", f"{name} measured ms") for name in report.rows[0].targets]
    budgeted = [
        f"{cost} (LUT{', MiB' if cost.endswith('bytes') else ''})" for cost in report.rows[0].budgeted
    ]
    return [*COLUMNS, *(c for pair in others for c in pair), *budgeted]


def markdown(report: Report, figures: list[str]) -> str:
    teacher, shape, lut = report.rows[0], report.shape, report.lut
    lines = [
        f"# UNAST report: {report.teacher.name}",
        "",
        f"Teacher `{report.teacher}` ({shape.family}, {shape.num_layers} blocks, "
        f"hidden {shape.hidden_size}); "
        f"device **{report.device}**; LUT {lut.id} (prefill, batch {lut.batch}, {lut.length} tokens, "
        f"{lut.dtype}); budgets: {', '.join(budget_text(b) for b in report.budgets)}; "
        f"configuration `{report.config['name']}`; format `{report.format}`.",
        "",
        *(report.data and [*report.data, ""]),
        "## Results",
        "",
        "Held-out perplexity on the same held-out tokens for every row; every method finetuned for the "
        f"same {report.config['finetune_steps']} steps on the same data (scratch: trained from random "
        "weights, below). Latency: LUT-predicted for the "
        "whole model (and as a share of the latency budget), and measured whole on the device (the "
        "profiler, p10 of its runs).",
        "",
        "| " + " | ".join(columns(report)) + " |",
        "|" + " --- |" * len(columns(report)),
        *(table_row(row, teacher, shape, report.latency_budget_ms) for row in report.rows),
        "",
        *[f"- {note}" for note in report.notes],
        "",
        *scratch_lines(report),
        *(["## Serving in the nemotron-nas form", "", *report.form, ""] if report.form else []),
        "## Figures",
        "",
    ]
    for name in figures:
        lines += [f"### {CAPTIONS[name]}", "", f"![{CAPTIONS[name]}]({FIGURES}/{name})", ""]
    check = report.lut_check
    stability = "stable" if lut.stable else "UNSTABLE"
    lines += [
        "## The LUT",
        "",
        f"Built in {lut.build_seconds:.0f} s; the device moved {_pct(lut.drift)} between the start and the "
        f"end of the build ({stability} by its threshold). {check.count} random architectures timed "
        f"whole: median |error| {check.median_abs_error:.1%}, worst {check.max_abs_error:.1%}, "
        f"device drift since the build {check.drift:+.1%}.",
        *(
            [f"Note: {profile.dtype_note}."]
            if (profile := report.stages.get("profile")) and profile.dtype_note
            else []
        ),
        "",
        "## Stages",
        "",
        "| stage | wall s | ids | notes |",
        "| --- | --- | --- | --- |",
    ]
    for name, stage in report.stages.items():
        ids = {"job_id": stage.job_id, "lut_id": stage.lut_id, "validation_id": stage.validation_id}
        notes = {
            "spearman": stage.spearman,
            "rank_stability": stage.rank_stability,
            "perplexity": stage.perplexity,
            "solutions": stage.solutions,
            "status": stage.status,
        }
        ids_text = ", ".join(f"{k} {v}" for k, v in ids.items() if v is not None)
        notes_text = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in notes.items() if v is not None
        )
        wall = stage.wall_s if stage.wall_s is not None else "-"
        lines.append(f"| {name} | {wall} | {ids_text} | {notes_text} |")
    if report.export:
        lines += ["", "## The exported model", "", *exported(report), ""]
    lines += ["", "## Configuration", "", "```json", json.dumps(report.config, indent=1), "```", ""]
    return "\n".join(lines)


def scratch_lines(report: Report) -> list[str]:
    """The cost of UNAST's model beside training its architecture from scratch (the paper's claim)."""
    rows = {r.name: r for r in report.rows}
    if not report.spent or "scratch" not in rows:
        return []
    *unast_spent, scratch_spent = report.spent
    tokens = sum(s.tokens for s in unast_spent)
    seconds = [s.wall_s for s in unast_spent]
    total_s = f"{sum(seconds):,.0f}" if None not in seconds else "-"

    def wall(value: float | None) -> str:
        return f"{value:,.0f}" if value is not None else "-"

    lines = [
        "## From scratch",
        "",
        f"UNAST's architecture trained from random weights on the same data (lm loss, the demo teacher's "
        f"recipe) with {SCRATCH_TOKENS}x the tokens the compression trained UNAST's model on. The distill "
        "stage's time also covers the baselines' candidates it learns beside UNAST's.",
        "",
        "| training | tokens | wall s | held-out perplexity |",
        "| --- | --- | --- | --- |",
        *(f"| UNAST: {s.stage} | {s.tokens:,} | {wall(s.wall_s)} | |" for s in unast_spent),
        f"| **UNAST, in all** | {tokens:,} | {total_s} | {rows['unast'].ppl_after:.2f} |",
        f"| **from scratch** | {scratch_spent.tokens:,} | {wall(scratch_spent.wall_s)} | "
        f"{rows['scratch'].ppl_after:.2f} |",
        "",
    ]
    return lines


def exported(report: Report) -> list[str]:
    export, model = report.export, report.out / "model"
    decilm = "written (`nemotron-nas/`)"
    if not export.decilm:
        decilm = "not expressible (" + "; ".join(export.decilm_reasons[:3]) + ")"
    return [
        f"`{model}`: {len(export.files)} files; reloads to bit-identical logits: "
        f"{export.reload_identical}; ONNX in onnxruntime, largest logit difference "
        f"{export.onnx_max_abs_diff}; DeciLM / Nemotron-NAS form: {decilm}.",
        "",
        f"    unast generate {model} --prompt 'ROMEO:'",
    ]


def _pct(value: float | None) -> str:
    return "an unknown amount" if value is None else f"{value:+.1%}"
