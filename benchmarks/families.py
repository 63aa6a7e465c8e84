"""Each family through the README's command: a tiny random checkpoint that transformers writes
(tests/hf_families.py, with the demo teacher's tokenizer), its logits against transformers', then
`unast compress` on it with a tiny --config file, timed whole (an embedded stack per run, as a new user
gets). Prints one row per family: the logit difference, the wall time and how the run ended.

    .venv/bin/python -m benchmarks.families [--names qwen3 mistral qwen3:bfloat16]

The checkpoints go to var/families/ (inside the input roots the services read), the runs to --out.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import DEMO_TEACHER
from services.pipeline.configs import QUICK
from shared.model import Decoder
from tests.hf_families import TEACHERS, teacher_checkpoint

MODELS = Path("var/families")
TINY_CONFIG = {  # over quick's fields: minutes per family, every stage run
    "length": 64,
    "lut_time_cap_s": 5.0,
    "validation_count": 2,
    "distill_steps": 10,
    "distill_batch": 4,
    "score_batches": 2,
    "k": 2,
    "rank_steps": 3,
    "finetune_steps": 6,
    "eval_every": 3,
    "eval_batches": 2,
    "batch": 4,
    "seq_len": 64,
    "baselines": False,
}


def logit_difference(directory: Path, reference: torch.nn.Module) -> float:
    ours = Decoder.from_pretrained(directory).eval()
    idx = torch.randint(0, ours.shape.vocab_size, (2, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (ours(idx) - reference(idx).logits).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/families"))
    parser.add_argument(
        "--names", nargs="*", default=[*TEACHERS, "qwen3:bfloat16"], help="tests/hf_families.py's[:dtype]"
    )
    parser.add_argument("--latency", default="0.6")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.out / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    assert set(TINY_CONFIG) <= set(QUICK.as_dict())
    vocab = json.loads((DEMO_TEACHER / "config.json").read_text())["vocab_size"]
    print("| teacher | family | max abs logit difference | unast compress wall s | exit | report |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.names:
        directory = MODELS / name.replace(":", "-")
        family, _, dtype = name.partition(":")  # qwen3:bfloat16 saves the checkpoint in bfloat16
        reference = teacher_checkpoint(directory, family, vocab_size=vocab)
        if dtype:  # the logits compared are of the rounded weights, in float32
            reference.to(getattr(torch, dtype)).save_pretrained(directory, safe_serialization=True)
            reference.float()
        for file in DEMO_TEACHER.glob("tokenizer*"):
            shutil.copy(file, directory)
        difference = logit_difference(directory, reference)
        run = args.out / "runs" / name.replace(":", "-")
        command = [sys.executable, "-m", "services.cli", "compress", "--model", str(directory)]
        command += ["--latency", args.latency, "--config", str(config), "--out", str(run)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        (run.parent / f"{run.name}.log").write_text(done.stdout + done.stderr)
        report = run / "report.md"
        print(
            f"| {name} | {reference.config.model_type} | {difference:.1e} | {wall:.0f} | {done.returncode} "
            f"| {report if report.exists() else done.stderr.strip()[-200:]} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
