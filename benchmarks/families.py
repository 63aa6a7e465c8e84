"""Each family through the README's command: a tiny random checkpoint that transformers writes
(tests/hf_families.py, with the demo teacher's tokenizer), its logits against transformers', then
`unast compress` on it with a tiny --config file, timed whole (an embedded stack per run, as a new user
gets). Prints one row per family: the logit difference, the wall time and how the run ended.

    .venv/bin/python -m benchmarks.families [--names qwen3 mistral qwen3:bfloat16]
    .venv/bin/python -m benchmarks.families --real-widths   # the logits at real models' widths

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
from transformers import AutoModelForCausalLM

from benchmarks.common import DEMO_TEACHER
from services.pipeline.configs import QUICK
from shared.model import Decoder
from tests.hf_families import TEACHERS, teacher_checkpoint, write_checkpoint

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


# real models' widths, two blocks deep (their depth changes nothing the comparison looks at)
REAL_WIDTHS: dict[str, tuple[str, dict]] = {
    "SmolLM-135M": (
        "llama",
        dict(
            hidden_size=576,
            num_attention_heads=9,
            num_key_value_heads=3,
            intermediate_size=1536,
            vocab_size=49152,
            tie_word_embeddings=True,
        ),
    ),
    "Llama-3.2-1B": (
        "llama",
        dict(
            hidden_size=2048,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=8192,
            vocab_size=128256,
            tie_word_embeddings=True,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        ),
    ),
    "Qwen2.5-0.5B": (
        "qwen2",
        dict(
            hidden_size=896,
            num_attention_heads=14,
            num_key_value_heads=2,
            intermediate_size=4864,
            vocab_size=151936,
            tie_word_embeddings=True,
            rope_theta=1000000.0,
        ),
    ),
    "Qwen3-0.6B": (
        "qwen3",
        dict(
            hidden_size=1024,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
            vocab_size=151936,
            tie_word_embeddings=True,
            rope_theta=1000000.0,
        ),
    ),
    "Mistral-7B": (
        "mistral",
        dict(
            hidden_size=4096,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=14336,
            vocab_size=32000,
            sliding_window=256,
        ),
    ),
}


def real_widths(out: Path) -> None:
    """Logits against transformers' at real widths (512 tokens: past Mistral's window, set to 256)."""
    print("| width of | family | parameters (2 blocks) | max abs logit difference | largest logit |")
    print("| --- | --- | --- | --- | --- |")
    for name, (model_type, fields) in REAL_WIDTHS.items():
        directory = out / "real" / name
        reference = write_checkpoint(
            directory, model_type, num_hidden_layers=2, max_position_embeddings=16384, **fields
        )
        ours = Decoder.from_pretrained(directory).eval()
        idx = torch.randint(0, ours.shape.vocab_size, (1, 512), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            theirs = reference(idx).logits
            difference = (ours(idx) - theirs).abs().max().item()
        params = sum(p.numel() for p in reference.parameters())
        print(
            f"| {name} | {model_type} | {params / 1e6:.0f}M | {difference:.1e} | {theirs.abs().max():.1f} |",
            flush=True,
        )
        del reference, ours
        shutil.rmtree(directory)


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
    parser.add_argument("--real-widths", action="store_true", help="only the logits at real models' widths")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.real_widths:
        return real_widths(args.out)
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
        if dtype:  # compared: the rounded weights, loaded by both in float32
            reference.to(getattr(torch, dtype)).save_pretrained(directory, safe_serialization=True)
            reference = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
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
