"""The report's lines on serving the result in the DeciLM / Nemotron-NAS `block_configs` form
(shared/decilm.py): in the default format, which slots of UNAST's architecture the form cannot express
and what the servable row costs against UNAST at the same budget; with `--format nemotron-nas`, that
every method kept to the form. And which engines take the form's linear slots."""

from services.pipeline.methods import SERVABLE_ROW, SERVABLE_STAGE, Method
from services.pipeline.stages import Run
from shared import decilm
from shared.schemas.operators import Architecture

MAX_SLOTS = 24  # slots named one by one; the rest counted


def form_lines(run: Run, made: list[Method], servable_note: str) -> list[str]:
    unast = made[0]
    if (why := decilm.family_problem(run.shape)) is not None:
        return [f"No model of this teacher opens in the nemotron-nas form: {why}."]
    if run.format == "nemotron-nas":
        return [
            "`--format nemotron-nas`: every method kept to the servable pool (what the form expresses); "
            "UNAST's export holds the form in `model/nemotron-nas/`.",
            *linear_lines(unast.architecture),
        ]
    lines = fit_lines(run, unast.architecture)
    row = next((m for m in made if m.name == SERVABLE_ROW), None)
    if row is not None and row.finetuned is not None and unast.finetuned is not None:
        ppl, base = row.finetuned.perplexity, unast.finetuned.perplexity
        walls = [run.record.stage(f"{SERVABLE_STAGE}-{s}").wall_s for s in ("search", "rank", "finetune")]
        extra = sum(map(len, run.candidates.values())) - sum(map(len, run.pools["unast"].values()))
        lines += [
            "",
            f"What the servable mode costs at the same budget: the `{SERVABLE_ROW}` row (the nemotron-nas "
            "pool from the same distill job, searched, ranked and finetuned as UNAST was) reaches "
            f"perplexity {ppl:.2f} after finetuning against UNAST's {base:.2f} ({ppl / base - 1:+.1%}). "
            f"The row took {sum(w or 0.0 for w in walls):.0f} s (search, ranking, finetune)"
            + (
                f" and {extra} candidates more in the distill job than UNAST's pool alone."
                if extra
                else "; the distill job learned nothing more for it (UNAST's pool holds its candidates)."
            ),
            *linear_lines(row.architecture),
        ]
    elif servable_note:
        lines += ["", f"No servable row: {servable_note}."]
    elif "nemotron-nas" not in run.pools:
        lines += ["", "No servable row: the configuration turns it off (`nemotron_nas_row`)."]
    return lines


def fit_lines(run: Run, architecture: Architecture, name: str = "UNAST") -> list[str]:
    problems = decilm.slot_problems(architecture, run.shape)
    if not problems:
        return [f"{name}'s architecture fits the form: the export writes `model/nemotron-nas/`."]
    named = [f"- `{slot}`: {why}" for slot, why in list(problems.items())[:MAX_SLOTS]]
    more = [f"- and {len(problems) - MAX_SLOTS} more"] if len(problems) > MAX_SLOTS else []
    return [
        f"{name}'s architecture does not open in the engines that read the nemotron-nas form: "
        f"{len(problems)} of its {len(architecture.choices)} slots hold operators the form cannot express "
        "(`unast compress --format nemotron-nas` keeps to those it can):",
        "",
        *named,
        *more,
    ]


def linear_lines(architecture: Architecture) -> list[str]:
    attention = sum(op.kind == "linear" for _, t, op in architecture.slots() if t == "attention")
    mlp = sum(op.kind == "linear" for _, t, op in architecture.slots() if t == "mlp")
    if not attention and not mlp:
        return []
    return [
        "",
        f"Its linear slots ({attention} attention, {mlp} MLP: `replace_with_linear`) load in NVIDIA's "
        "own code, TensorRT-LLM and mlx-lm; vLLM's and ExLlamaV3's models have no `replace_with_linear`, "
        "and llama.cpp's converter has a linear attention but no linear MLP.",
    ]
