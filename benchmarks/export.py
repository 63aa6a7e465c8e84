"""Does the saving hold where users serve the model? The teacher and a student at about half its
predicted latency, timed in torch (as the profiler runs them), in transformers (the teacher as its
family's class, the student by the modeling code its export ships) and in onnxruntime (the exported
graph with its KV cache): prefill beside the LUT's predicted speed-up, and decode tokens/s at a few
context lengths.

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
from transformers import AutoModelForCausalLM

from benchmarks.common import pipeline_run
from services.pipeline.stages import trainer_job
from services.trainer.learning.onnx_export import session_pasts
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
        run.services.trainer.download_folder(job_id, result.files, "export", teacher_dir)
        student_dir = args.run / "model"
        lut_id = done.stage("profile").lut_id
        device_id = done.stage("profile").device_id
        predicted = {}
        for name, directory in (("teacher", teacher_dir), ("student", student_dir)):
            architecture = Decoder.from_pretrained(directory).architecture
            request = EstimateRequest(lut_id=lut_id, architecture=architecture)
            predicted[name] = run.services.profiler.estimate(device_id, request).latency_ms
    length = run.config.length
    dirs = {"teacher": teacher_dir, "student": student_dir}
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, run.shape.vocab_size, (1, length)))
    runtimes = {name: Runtimes(directory) for name, directory in dirs.items()}
    prefill = {
        runtime: interleaved(
            {n: (lambda r=r, f=runtime: r.prefill(f, ids)) for n, r in runtimes.items()}, args.rounds
        )
        for runtime in RUNTIMES
    }
    print(f"\nprefill of {length} tokens, batch 1, one thread; p10 of {args.rounds} interleaved rounds")
    print(f"{'':24s} {'teacher ms':>11s} {'student ms':>11s} {'speed-up':>9s}")
    for label, t in (("LUT (predicted)", predicted), *((f"{r} (measured)", prefill[r]) for r in RUNTIMES)):
        print(f"{label:24s} {t['teacher']:11.3f} {t['student']:11.3f} {ratio(t):8.2f}x")
    limit = run.shape.max_position_embeddings
    print("\ndecode: one new token after a KV cache of `context` tokens, batch 1, one thread; tokens/s")
    print(f"{'runtime':14s} {'context':>8s} {'teacher tok/s':>14s} {'student tok/s':>14s} {'speed-up':>9s}")
    for context in [c for c in (64, 256, 1024) if c < limit]:
        prompt = torch.from_numpy(np.random.default_rng(1).integers(0, run.shape.vocab_size, (1, context)))
        for runtime in RUNTIMES:
            steps = {n: r.decode_step(runtime, prompt) for n, r in runtimes.items()}
            t = interleaved(steps, args.rounds)
            rate = {n: 1e3 / ms for n, ms in t.items()}
            print(
                f"{runtime:14s} {context:8d} {rate['teacher']:14.0f} {rate['student']:14.0f} {ratio(t):8.2f}x"
            )
    print(
        f"onnxruntime's prefill speed-up is {ratio(prefill['onnxruntime']) / ratio(predicted):.2f} "
        "of the LUT's"
    )


RUNTIMES = ("torch", "transformers", "onnxruntime")


def ratio(times: dict[str, float]) -> float:
    return times["teacher"] / times["student"]


class Runtimes:
    """One exported model in the three runtimes: ours (torch), transformers (the teacher as its family's
    plain class, a student by its shipped modeling code) and onnxruntime (the graph with its KV cache)."""

    def __init__(self, directory: Path):
        self.torch = Decoder.from_pretrained(directory).eval()
        self.transformers = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()
        self.onnx = session(directory / "model.onnx")

    @torch.no_grad()
    def prefill(self, runtime: str, ids: torch.Tensor):
        if runtime == "torch":
            return self.torch(ids)
        if runtime == "transformers":
            return self.transformers(ids, use_cache=False).logits
        return self.onnx.run(["logits"], {"input_ids": ids.numpy(), **session_pasts(self.onnx, 1)})

    @torch.no_grad()
    def decode_step(self, runtime: str, prompt: torch.Tensor):
        """A call that runs one token after the prompt's cache, and leaves the cache as it found it."""
        token = prompt[:, -1:]
        if runtime == "torch":
            caches = self.torch.new_caches(1, prompt.shape[1] + 1)
            self.torch(prompt, caches)
            filled = prompt.shape[1]

            def step():
                self.torch(token, caches)
                for cache in caches:
                    if cache is not None:
                        cache.length = filled

            return step
        if runtime == "transformers":
            out = self.transformers(prompt, use_cache=True)
            name = "cache" if "cache" in out else "past_key_values"  # transformers >= 5.24: cache
            cache = out[name]

            def step():
                self.transformers(token, use_cache=True, **{name: cache})
                cache.crop(-1)  # the token just added

            return step
        names = [o.name for o in self.onnx.get_outputs()]
        outputs = self.onnx.run(None, {"input_ids": prompt.numpy(), **session_pasts(self.onnx, 1)})
        pasts = {
            name.replace("present_", "past_"): value
            for name, value in zip(names, outputs, strict=True)
            if name.startswith("present_")
        }
        return lambda: self.onnx.run(["logits"], {"input_ids": token.numpy(), **pasts})


if __name__ == "__main__":
    main()
