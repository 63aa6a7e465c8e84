"""`unast compress`: a model directory, a device and budgets in; a smaller model and a report out.

profile the candidates on the device (reusing a LUT of the same device, shape and regime) -> check the
budgets can be met -> distill every slot's candidates -> score them -> search K architectures -> rank
them by a short finetune -> finetune the winner -> export it -> the baselines beside it -> measure the
models on the device against the LUT's prediction -> report.
"""

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from services.pipeline import data, methods
from services.pipeline.configs import CONFIGS, changed, load_config
from services.pipeline.planning import plan_table
from services.pipeline.progress import Reporter
from services.pipeline.record import RecordError, RunInputs, RunRecord, digest, lock
from services.pipeline.report import Report, Row, write
from services.pipeline.servable import form_lines
from services.pipeline.stack import StackError, services
from services.pipeline.stages import (
    PipelineError,
    Run,
    Stopped,
    distill,
    feasible,
    install_stop_handlers,
    profile,
    profiler_of,
    score,
    trainer_job,
    validate,
)
from services.pipeline.targets import Target, binding, targets_and_budgets
from shared import decilm
from shared.clients.base import ServiceError
from shared.plan import TooManyProcesses
from shared.pretrained import read_model
from shared.schemas.lut import Dtype, Estimate, EstimateRequest, Lut, ValidationRequest
from shared.schemas.operators import Architecture
from shared.schemas.search import SweepRequest
from shared.schemas.shape import ModelShape, one_line, stored_dtype
from shared.schemas.trainer import (
    DirectoryModel,
    EvaluateResult,
    EvaluateSpec,
    ExportResult,
    ExportSpec,
    ExportTarget,
    FinetunedModel,
)
from shared.search_input import architecture_costs, merged
from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class Inputs:
    model: Path
    device: str
    budgets: list[str]  # as given: "latency_ms 0.5", ...
    k: int | None
    config: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", type=Path, required=True, help="the teacher: a Hugging Face Llama directory"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]: what the profiler measures")
    # each budget may be repeated as NAME:VALUE for the profiler --target NAME=URL names
    budget = {"action": "append", "default": [], "metavar": "[NAME:]VALUE"}
    parser.add_argument(
        "--latency",
        **budget,
        help="latency of a prefill of the config's length: a fraction of the teacher's (0.5) or 30ms",
    )
    parser.add_argument(
        "--memory",
        **budget,
        help="memory (weights + KV cache + peak activations; at --context and --batch when given): 0.6, 2GiB",
    )
    parser.add_argument("--params", **budget, help="parameters: 0.6 or 60M")
    parser.add_argument(
        "--ttft", **budget, help="time to first token: a prefill of --context tokens at --batch (0.5, 40ms)"
    )
    parser.add_argument(
        "--decode-latency",
        **budget,
        help="latency of one decode step after --context cached tokens at --batch: 0.5, 20ms or 50tok/s",
    )
    parser.add_argument("--context", type=int, help="the tokens --ttft, --decode-latency and --memory are at")
    parser.add_argument("--batch", type=int, default=1, help="the sequences served at once (default 1)")
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="another device's profiler (http://host:8001); budgets written NAME:VALUE hold there",
    )
    parser.add_argument(
        "--k", type=int, help="architectures the search returns for ranking (default: the config's)"
    )
    parser.add_argument(
        "--config",
        default="quick",
        help=f"how much work each stage does: {' or '.join(CONFIGS)}, or a JSON file of fields over quick's",
    )
    parser.add_argument(
        "--format",
        choices=decilm.FORMATS,
        default="unast",
        help="unast: any candidate operator; nemotron-nas: only what the DeciLM / Nemotron-NAS "
        "block_configs form expresses, so the model opens in vLLM, TensorRT-LLM, mlx-lm, llama.cpp "
        "(a Llama teacher)",
    )
    parser.add_argument(
        "--dtype",
        choices=get_args(Dtype),
        help="the dtype the device runs the model in, for its LUT (default: the teacher's torch_dtype)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="the text to distil and finetune on: a folder with train.txt (and heldout.txt), a .txt, or a "
        ".jsonl or .parquet with a text field (default: the built-in Shakespeare corpus)",
    )
    parser.add_argument(
        "--text-field", default="text", help="the field of a .jsonl or .parquet that holds the text"
    )
    parser.add_argument("--out", type=Path, required=True, help="the run directory (runs/NAME)")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print each trainer stage's peak memory per process and expected time, and run nothing",
    )


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        config = load_config(args.config)
    except (ValueError, TypeError) as exc:
        print(f"unast compress: --config: {exc}", file=sys.stderr)
        return 2
    devices = dict(target.partition("=")[::2] for target in args.target)  # name -> profiler URL
    if bad := [t for t in args.target if not re.fullmatch(r"[A-Za-z][\w-]*=https?://\S+", t)]:
        print(f"unast compress: --target: {bad[0]!r} is not NAME=http://host:port", file=sys.stderr)
        return 2
    try:
        targets, budgets = targets_and_budgets(
            length=config.length,
            latency=args.latency,
            memory=args.memory,
            params=args.params,
            ttft=args.ttft,
            decode_latency=args.decode_latency,
            context=args.context,
            batch=args.batch,
            devices=devices,
        )
    except ValueError as exc:  # a budget's pydantic error comes wrapped (--latency=1e400ms: infinite)
        print(f"unast compress: {one_line_of(exc)}", file=sys.stderr)
        return 2
    if args.k is not None:
        try:
            config = changed(config, k=args.k)
        except ValueError as exc:  # "k: ...": the field is the option
            print(f"unast compress: --{exc}", file=sys.stderr)
            return 2
    teacher = args.model.resolve()
    try:
        shape, dtype = read_teacher(teacher, args.dtype)
    except ValueError as exc:  # before anything starts: the stack, a job, a LUT
        print(f"unast compress: --model {args.model}: {exc}", file=sys.stderr)
        return 2
    if args.context is not None and not 0 < args.context < shape.max_position_embeddings:
        limit = shape.max_position_embeddings
        print(
            f"unast compress: --context: {args.context} is not within the model's {limit} positions",
            file=sys.stderr,
        )
        return 2
    if args.batch < 1:
        print("unast compress: --batch: at least 1", file=sys.stderr)
        return 2
    format = args.format
    if format == "nemotron-nas" and (why := decilm.family_problem(shape)) is not None:
        print(f"unast compress: --format nemotron-nas: {why}", file=sys.stderr)
        return 2
    if args.plan:
        try:
            print(plan_table(config, shape, format, settings))
        except TooManyProcesses as exc:
            print(f"unast compress: UNAST_TRAINER_PROCS_PER_JOB: {exc}", file=sys.stderr)
            return 2
        return 0
    prepared = None
    if args.data is not None:  # read, checked and tokenised before anything starts
        try:
            prepared = data.prepare(args.data, args.text_field, teacher, settings, data.batch_tokens(config))
        except data.DataError as exc:
            print(f"unast compress: --data {args.data}: {exc}", file=sys.stderr)
            return 2
    if args.device.startswith("cuda"):
        settings = Settings(**{**settings.model_dump(), "profiler_device": args.device})
    if args.out.exists() and not args.out.is_dir():
        print(f"unast compress: --out {args.out}: not a directory", file=sys.stderr)
        return 2
    try:
        held = lock(args.out)  # released when this process ends
        if held is None:
            print(
                f"unast compress: --out {args.out}: another unast compress is running there", file=sys.stderr
            )
            return 2
        record = RunRecord(args.out)
    except (OSError, RecordError) as exc:  # not writable; a run.json this command did not write
        print(f"unast compress: --out {args.out}: {one_line_of(exc)}", file=sys.stderr)
        return 2
    record.data.inputs = RunInputs(
        model=str(teacher),
        device=args.device,
        budgets=budgets,
        config=config.as_dict(),
        dtype=dtype,
        format=format,
        targets=[asdict(t) for t in targets],
        data=str(prepared.directory) if prepared else data.BUILTIN,
        data_source=prepared.source if prepared else None,
    )
    record.save()
    with Reporter() as reporter:
        try:
            with services(settings, args.out / "stack.log", devices) as svc:
                where = (
                    "an embedded stack (its log: stack.log)"
                    if svc.embedded
                    else "the stack at " + ", ".join(svc.urls.values())
                )
                reporter.line(f"using {where}")
                run = Run(
                    services=svc,
                    record=record,
                    config=config,
                    reporter=reporter,
                    teacher=teacher,
                    shape=shape,
                    dtype=dtype,
                    budgets=budgets,
                    device_kind=args.device,
                    out=args.out,
                    format=format,
                    targets=targets,
                    data=prepared,
                )
                install_stop_handlers(run)
                report = pipeline(run)
        except Stopped:
            reporter.line(
                f"stopped; the running job was cancelled. Run the same command again to resume ({args.out})."
            )
            return 130
        except (PipelineError, StackError, ServiceError) as exc:
            reporter.line(f"unast compress: {exc}")
            return 1
    print(f"report: {report}")
    return 0


def read_teacher(directory: Path, dtype: str | None) -> tuple[ModelShape, Dtype]:
    """The teacher's shape and the dtype its LUT is timed in (given, else its config's torch_dtype), from
    config.json and the weights' headers, never the weights (shared/pretrained.py). ValueError, one line
    naming the file and the field, for a directory or a model this project does not compress."""
    if not (directory / "config.json").is_file():
        raise ValueError("no config.json (a Hugging Face model directory)")
    shape, _ = read_model(directory)
    stored = stored_dtype(json.loads((directory / "config.json").read_text()))  # JSON: read_model read it
    if dtype is None and stored not in get_args(Dtype):
        raise ValueError(f"torch_dtype: {stored!r} is not one the profiler times; give --dtype")
    return shape, dtype or stored


def one_line_of(exc: BaseException) -> str:
    """An error as one line; a pydantic error that another wraps, by its first problem and field."""
    text = str(exc)
    if isinstance(exc.__context__, ValidationError):
        text = text.replace(str(exc.__context__), one_line(exc.__context__))
    return " ".join(text.split())


def pipeline(run: Run) -> Path:
    targets = run.targets or [Target("", "", "prefill", 1, run.config.length)]
    luts = {target.name: profile(run, target) for target in targets}
    device_of = {target.name: target.device for target in targets}
    lut = luts[""]  # the run's own: the report's latency, the measurements, the export's target
    # every target's costs, from its own device's profiler, in one table
    costs = merged({name: profiler_of(run, device_of[name]).export(each.id) for name, each in luts.items()})
    feasible(run, costs)  # before any training: can the budgets be met at all?
    if run.config.baselines:  # chosen from costs alone, so that the distill job learns its operators
        uniform_choice = methods.uniform_choice(run, costs)
        run.uniform = uniform_choice.architecture
    distill_job, distilled = distill(run)
    scores = score(run, distill_job)

    teacher_arch = Architecture.teacher(run.shape)
    teacher_estimate = estimate(run, lut, teacher_arch)
    made = [methods.unast(run, distill_job, scores, costs, depth_only=False)]
    servable_note = ""
    if "nemotron-nas" in run.pools and run.format != "nemotron-nas":  # the servable row beside it
        servable, servable_note = methods.servable(run, distill_job, scores, costs)
        made += [servable] if servable is not None else []
    if run.config.baselines:
        made.append(methods.unast(run, distill_job, scores, costs, depth_only=True))
        made.append(methods.depth(run, distill_job, scores, costs))
        uniform = methods.uniform(run, distill_job, uniform_choice)
        if uniform is not None:
            made.append(uniform)
    unast = made[0]
    spent = []
    if run.config.scratch:  # after UNAST's own stages: its cost is what the scratch row gets 10x of
        spent = methods.compression_spent(run, unast, scores)
        scratch = methods.scratch(run, unast, spent)
        made.append(scratch)
        spent.append(
            methods.Spent("scratch", scratch.finetuned.tokens_trained, run.record.stage("scratch").wall_s)
        )

    export = export_model(run, unast, lut)
    teacher_eval = evaluate_teacher(run)
    architectures = [teacher_arch] + [m.architecture for m in made]
    distinct = list({a.model_dump_json(): a for a in architectures}.values())
    measured = validate(run, "measure", lut, ValidationRequest(architectures=distinct, seed=2))
    measured_ms = {v.architecture.model_dump_json(): v.measured.p10_ms for v in measured.architectures}
    others = {}  # per other target: each architecture's (predicted, measured) latency in that regime
    for name, other in luts.items():
        if name:
            request = ValidationRequest(architectures=distinct, seed=2)
            timed = validate(run, f"measure-{name}", other, request, device_of[name])
            p10 = {v.architecture.model_dump_json(): v.measured.p10_ms for v in timed.architectures}
            others[name] = {
                a.model_dump_json(): (
                    architecture_costs(costs, a)[f"{name}.latency_ms"],
                    p10.get(a.model_dump_json()),
                )
                for a in distinct
            }

    def in_targets(architecture: Architecture) -> dict[str, tuple[float, float | None]]:
        return {name: timed[architecture.model_dump_json()] for name, timed in others.items()}

    shown = {"latency_ms", "memory_bytes", "params", *(f"{name}.latency_ms" for name in others)}
    unshown = [b.cost for b in run.budgets if b.cost not in shown]  # e.g. ttft.memory_bytes, gpu.params

    def in_budgets(architecture: Architecture) -> dict[str, float]:
        totals = architecture_costs(costs, architecture)  # once, not once per cost
        return {cost: totals[cost] for cost in unshown}

    rows = [
        Row(
            "teacher",
            teacher_arch,
            teacher_estimate,
            measured_ms.get(teacher_arch.model_dump_json()),
            teacher_eval.perplexity,
            teacher_eval.perplexity,
            targets=in_targets(teacher_arch),
            budgeted=in_budgets(teacher_arch),
        )
    ]
    for m in made:
        rows.append(
            Row(
                m.name,
                m.architecture,
                estimate(run, lut, m.architecture),
                measured_ms.get(m.architecture.model_dump_json()),
                m.finetuned.curve[0].perplexity,
                m.finetuned.perplexity,
                m.finetuned.curve,
                targets=in_targets(m.architecture),
                budgeted=in_budgets(m.architecture),
            )
        )
    searched = methods.search_for(run, scores, costs, k=1, depth_only=False)
    teacher_costs = architecture_costs(costs, teacher_arch)
    plotted = binding(run.budgets, architecture_costs(costs, unast.architecture), teacher_costs)
    sweep = run.services.search.sweep(
        SweepRequest(
            slots=searched.slots,
            fixed=searched.fixed,
            peak_costs=searched.peak_costs,
            derived_costs=searched.derived_costs,
            cost=plotted,  # the binding latency's Pareto curve
            fractions=[round(0.2 + 0.05 * i, 2) for i in range(17)],
            time_limit_s=60,
            format=searched.format,
        )
    )
    budget_ms = methods.latency_limit(run, teacher_costs)
    report = Report(
        out=run.out,
        shape=run.shape,
        teacher=run.teacher,
        device=run.record.stage("profile").device or "?",
        budgets=run.budgets,
        config=run.config.as_dict(),
        lut=lut,
        lut_check=validate(
            run, "lut-check", lut, ValidationRequest(count=run.config.validation_count, seed=1)
        ),
        rows=rows,
        unast=unast,
        sweep=sweep.points,
        plotted=(plotted, teacher_costs[plotted]),
        stages=run.record.data.stages,
        export=export,
        notes=notes(rows, budget_ms),
        format=run.format,
        form=form_lines(run, made, servable_note),
        data=data.report_lines(run.data, distilled),
        spent=spent,
        latency_budget_ms=budget_ms,
    )
    return write(report)


def estimate(run: Run, lut: Lut, architecture: Architecture) -> Estimate:
    return run.services.profiler.estimate(
        lut.device_id, EstimateRequest(lut_id=lut.id, architecture=architecture)
    )


def evaluate_teacher(run: Run) -> EvaluateResult:
    spec = EvaluateSpec(
        model=DirectoryModel(path=str(run.teacher)),
        batch_size=run.config.batch,
        seq_len=run.config.seq_len,
        eval_batches=run.config.eval_batches,
    )
    _, result = trainer_job(run, "teacher-eval", spec)
    run.record.update("teacher-eval", perplexity=result.perplexity)
    return result


def export_model(run: Run, method: methods.Method, lut: Lut) -> ExportResult:
    """Export the finetuned winner, then fetch its files into <run>/model/ over REST."""
    predicted = estimate(run, lut, method.architecture)
    spec = ExportSpec(
        model=FinetunedModel(finetune_job=method.finetune_job),
        onnx=run.config.onnx,
        format=run.format,  # nemotron-nas: the job fails rather than export without the form
        target=ExportTarget(
            device=run.record.stage("profile").device,
            device_id=lut.device_id,
            lut_id=lut.id,
            predicted={
                "latency_ms": predicted.latency_ms,
                "memory_bytes": predicted.memory_bytes,
                "params": predicted.params,
            },
        ),
    )
    job_id, result = trainer_job(run, "export", spec)
    target = run.out / "model"
    key = digest("download", job_id, result.files)
    if run.record.reusable("download", key) is None:
        run.record.start("download", key)
        run.services.trainer.download_folder(job_id, result.files, "export", target)
        run.record.finish("download", files=len(result.files))
    return result


def notes(rows: list[Row], budget_ms: float | None) -> list[str]:
    """The method's goals at this budget (the issue's, after the paper's Table 2): UNAST at least 5%
    below depth pruning after finetuning, and no worse than any baseline; within 5% of the teacher
    before finetuning. Methods are compared at matched latency only: one more than 5% under the
    latency budget gets a line of its own instead."""
    by = {r.name: r for r in rows}
    out = []
    if "unast" not in by:
        return out
    unast = by["unast"].ppl_after
    shares = {r.name: r.estimate.latency_ms / budget_ms if budget_ms else None for r in rows}
    short = {name for name, share in shares.items() if name != "teacher" and methods.budget_note(name, share)}
    out += [methods.budget_note(name, shares[name]) for name in by if name in short]
    if "depth" in by and "depth" not in short:
        change = unast / by["depth"].ppl_after - 1
        word = "below" if change < 0 else "above"
        out.append(
            f"UNAST's perplexity after finetuning is {abs(change):.1%} {word} depth pruning's "
            f"(goal: at least 5% below)."
        )
    others = ("teacher", "unast", methods.SERVABLE_ROW, "scratch")
    baselines = [r for name, r in by.items() if name not in others and name not in short]
    if baselines:
        best = min(baselines, key=lambda r: r.ppl_after)
        out.append(
            f"The best baseline after finetuning at matched latency, {best.name}, reaches "
            f"{best.ppl_after:.2f} (UNAST {unast:.2f})."
        )
    if "scratch" in by:
        change = unast / by["scratch"].ppl_after - 1
        word = "below" if change < 0 else "above"
        out.append(
            f"Its architecture trained from scratch on {methods.SCRATCH_TOKENS}x the tokens reaches "
            f"{by['scratch'].ppl_after:.2f}: UNAST is {abs(change):.1%} {word} it."
        )
    gap = by["unast"].ppl_before / rows[0].ppl_after - 1  # the teacher's row is the first
    out.append(f"UNAST before finetuning is {gap:+.1%} from the teacher's perplexity (goal: within 5%).")
    return out
