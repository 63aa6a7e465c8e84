"""Does the saving hold in a runtime users deploy with? The teacher and a student at about half its
predicted latency, both exported to ONNX, timed in onnxruntime on this CPU, beside the LUT's predicted
speed-up (and the same two models timed in torch, as the profiler runs them).

    .venv/bin/python -m benchmarks.export --run runs/quick [--rounds 300]

The student is the run's exported model (<run>/model/model.onnx); the teacher is exported by an export
job of its own (the teacher's architecture as a student: every slot its own operator). Timing: prefill
of the LUT's length, batch 1, one thread; both models in interleaved rounds, one call each in a fresh
random order per round; p10 of the call times (interference only adds time), as the profiler does.
"""

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from benchmarks.common import pipeline_run
from services.pipeline.stages import trainer_job
from shared.model import Decoder
from shared.schemas.lut import EstimateRequest
from shared.schemas.operators import Architecture
from shared.schemas.trainer import ExportResult, ExportSpec, StudentModel


def session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved(calls: dict[str, callable], rounds: int) -> dict[str, float]:
    """p10 of each call's wall time over interleaved rounds (ms)."""
    for call in calls.values():  # warm-up
        for _ in range(5):
            call()
    samples = {name: [] for name in calls}
    order = list(calls)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            started = time.perf_counter()
            calls[name]()
            samples[name].append((time.perf_counter() - started) * 1e3)
    return {name: statistics.quantiles(s, n=10)[0] for name, s in samples.items()}


def fetch(run, job_id: str, files: list[str], target: Path) -> None:
    for file in files:
        run.services.trainer.download(job_id, file, target / Path(file).relative_to("export"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="a finished `unast compress` run directory")
    p.add_argument("--rounds", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    with pipeline_run(args.run, "export") as (run, done):
        teacher_spec = ExportSpec(
            model=StudentModel(
                distill_job=done.stage("distill").job_id, architecture=Architecture.teacher(run.shape)
            ),
            onnx=True,
        )
        job_id, result = trainer_job(run, "export-teacher", teacher_spec)
        assert isinstance(result, ExportResult)
        teacher_dir = args.run / "benchmarks" / "export" / "teacher"
        fetch(run, job_id, result.files, teacher_dir)
        student_dir = args.run / "model"
        lut_id = done.stage("profile").lut_id
        device_id = done.stage("profile").device_id
        predicted = {}
        for name, directory in (("teacher", teacher_dir), ("student", student_dir)):
            architecture = Decoder.from_pretrained(directory).architecture
            request = EstimateRequest(lut_id=lut_id, architecture=architecture)
            predicted[name] = run.services.profiler.estimate(device_id, request).latency_ms
    length = run.config.length
    ids = np.random.default_rng(0).integers(0, run.shape.vocab_size, (1, length))
    sessions = {
        name: session(d / "model.onnx") for name, d in (("teacher", teacher_dir), ("student", student_dir))
    }
    onnx = interleaved(
        {n: (lambda s=s: s.run(["logits"], {"input_ids": ids})) for n, s in sessions.items()}, args.rounds
    )
    models = {
        n: Decoder.from_pretrained(d).eval() for n, d in (("teacher", teacher_dir), ("student", student_dir))
    }
    tokens = torch.from_numpy(ids)
    with torch.no_grad():
        eager = interleaved({n: (lambda m=m: m(tokens)) for n, m in models.items()}, args.rounds)

    def ratio(times: dict[str, float]) -> float:
        return times["teacher"] / times["student"]

    print(f"\nprefill of {length} tokens, batch 1, one thread; p10 of {args.rounds} interleaved rounds")
    print(f"{'':22s} {'teacher ms':>11s} {'student ms':>11s} {'speed-up':>9s}")
    for label, t in (
        ("LUT (predicted)", predicted),
        ("torch (measured)", eager),
        ("onnxruntime (measured)", onnx),
    ):
        print(f"{label:22s} {t['teacher']:11.3f} {t['student']:11.3f} {t['teacher'] / t['student']:8.2f}x")
    print(f"onnxruntime's speed-up is {ratio(onnx) / ratio(predicted):.2f} of the LUT's predicted one")


if __name__ == "__main__":
    main()
