"""Where the before-finetune gap comes from (issue 21): one architecture chosen by `unast compress`, its
perplexity before any finetune against how its candidates were distilled, and after a short global
distillation of the assembled student on the teacher's logits (Puzzletron's GKD: the finetune job's
`kd` loss), each beside its cost.

    .venv/bin/python -m benchmarks.gap --run runs/quick            # about 25 min on a quiet CPU core
    .venv/bin/python -m benchmarks.gap --run runs/quick --steps 100 --losses nmse --gkd-steps 20

Every variant distils only the architecture's own candidates (one per slot that is neither the
teacher's operator nor identity): a candidate learns from the teacher's activations alone, so it
learns the same whether or not the rest of the pool trains beside it. The pipeline's schedule
(AdamW 1e-3 to 1e-4, a twentieth of the steps warm-up, batch 8 x 128 tokens); each variant's folder
under --out is reused when it has finished (a run stopped midway resumes from its checkpoint).
Perplexity: the same 32 held-out batches of 8 x 128 tokens for every row.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from services.trainer.local import run_locally
from shared.pretrained import read_model
from shared.schemas.operators import Architecture, is_teacher, spec_name
from shared.schemas.trainer import (
    DirectoryModel,
    DistillSpec,
    EvaluateResult,
    EvaluateSpec,
    FinetuneResult,
    FinetuneSpec,
    JobSpec,
    StudentModel,
)
from shared.settings import get_settings

BATCH, SEQ_LEN, EVAL_BATCHES = 8, 128, 32


def architecture_of(run: Path) -> Architecture:
    """The architecture a finished run exported (runs/NAME/model/config.json)."""
    config = json.loads((run / "model" / "config.json").read_text())
    return Architecture.model_validate(config["unast_architecture"])


def candidates(architecture: Architecture, teacher: Path) -> dict:
    shape, _ = read_model(teacher)
    return {
        slot: [operator]
        for slot, slot_type, operator in architecture.slots()
        if operator.kind != "identity" and not is_teacher(operator, shape, slot_type)
    }


def job(spec: JobSpec, folder: Path) -> tuple[dict, float]:
    """(the job's result, its wall seconds): run here, or read from a finished folder."""
    done = folder / "result.json"
    if done.is_file() and (folder / "seconds").is_file():
        return json.loads(done.read_text()), float((folder / "seconds").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(spec.model_dump_json(indent=1))
    started = time.monotonic()
    result = run_locally(folder / "spec.json", folder, get_settings())
    seconds = time.monotonic() - started
    (folder / "seconds").write_text(f"{seconds:.1f}")
    return result, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished `unast compress` run directory")
    p.add_argument("--steps", default="100,400,1600", help="distill steps, NMSE loss")
    p.add_argument("--losses", default="nmse,mse,l1,cosine", help="distill losses, at the middle steps")
    p.add_argument("--gkd-steps", default="50,200", help="kd finetune steps after the middle distill")
    p.add_argument("--out", type=Path, default=Path("var/gap"))
    args = p.parse_args()
    torch.set_num_threads(get_settings().torch_threads)
    record = json.loads((args.run / "run.json").read_text())
    teacher = Path(record["inputs"]["model"])
    architecture = architecture_of(args.run)
    steps = [int(s) for s in args.steps.split(",")]
    middle = steps[len(steps) // 2]
    evaluation = {"batch_size": BATCH, "seq_len": SEQ_LEN, "eval_batches": EVAL_BATCHES}

    base, _ = job(EvaluateSpec(model=DirectoryModel(path=str(teacher)), **evaluation), args.out / "teacher")
    teacher_ppl = EvaluateResult.model_validate(base).perplexity
    learned = candidates(architecture, teacher)
    print(f"architecture of {args.run}: {len(learned)} slots distilled, the rest identity or the teacher's")
    print(f"teacher: held-out perplexity {teacher_ppl:.2f}\n")

    rows = []
    variants = [(n, "nmse") for n in steps] + [
        (middle, loss) for loss in args.losses.split(",") if loss != "nmse"
    ]
    distilled = {}
    for n, loss in variants:
        folder = args.out / f"distill-{loss}-{n}"
        spec = DistillSpec(
            teacher=str(teacher),
            candidates=learned,
            steps=n,
            batch_size=BATCH,
            seq_len=SEQ_LEN,
            warmup=max(1, n // 20),
            loss=loss,
            checkpoint_every=max(10, n // 10),
        )
        _, seconds = job(spec, folder)
        distilled[(n, loss)] = folder
        student = StudentModel(distill_job=str(folder), architecture=architecture)
        result, _ = job(EvaluateSpec(model=student, **evaluation), args.out / f"eval-{loss}-{n}")
        ppl = EvaluateResult.model_validate(result).perplexity
        rows.append((f"distill {n} steps, {loss}", n * BATCH * SEQ_LEN, seconds, ppl))
    for n in [int(s) for s in args.gkd_steps.split(",") if s]:
        student = StudentModel(distill_job=str(distilled[(middle, "nmse")]), architecture=architecture)
        spec = FinetuneSpec(
            model=student, steps=n, loss="kd", eval_every=n, warmup=max(1, n // 20), **evaluation
        )
        result, seconds = job(spec, args.out / f"gkd-{middle}-{n}")
        ppl = FinetuneResult.model_validate(result).perplexity
        rows.append((f"distill {middle} nmse + GKD {n} steps", n * BATCH * SEQ_LEN, seconds, ppl))

    print("| variant | tokens trained | wall s | ppl before finetune | vs teacher |")
    print("| --- | --- | --- | --- | --- |")
    for name, tokens, seconds, ppl in rows:
        print(f"| {name} | {tokens:,} | {seconds:.0f} | {ppl:.2f} | {ppl / teacher_ppl - 1:+.1%} |")
    print(f"\n(slots distilled: {', '.join(f'{s} {spec_name(o[0])}' for s, o in learned.items())})")


if __name__ == "__main__":
    main()
