"""Distillation step: one teacher pass for all candidates vs a teacher pass per candidate, and the
step's achieved FLOP/s as a fraction of this machine's dense matmul FLOP/s, measured in one run.

    .venv/bin/python -m benchmarks.distill [--teacher DIR] [--threads 1]
"""

import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import batches, four_candidates, load_teacher, parser, set_threads
from services.trainer.learning.distill import build_students, capture, distill_step, named_parameters, nmse


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def matmul_flops_per_s(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / timed(lambda: a @ b, repeats)


def main() -> None:
    args = parser(__doc__).parse_args()
    set_threads(args.threads)
    teacher = load_teacher(args.teacher)
    specs = four_candidates(teacher.shape)
    idx = batches(teacher.shape, 1, args.batch, args.seq_len)[0][:, :-1]
    students, _ = build_students(teacher, specs, capture(teacher, idx), seed=0)
    optimizer = torch.optim.AdamW(named_parameters(students).values(), lr=1e-4)

    def ours():
        distill_step(students, optimizer, capture(teacher, idx), nmse)

    def naive():  # the teacher reruns for every candidate it teaches
        for slot, modules in students.items():
            for cid, module in modules.items():
                x, t = capture(teacher, idx)[slot]
                distill_step({slot: {cid: module}}, optimizer, {slot: (x, t)}, nmse)

    n_candidates = sum(len(m) for m in students.values())
    t_ours, t_naive = timed(ours, args.repeats), timed(naive, max(1, args.repeats // 2))
    with FlopCounterMode(display=False) as counter:
        ours()
    step_flops = counter.get_total_flops()
    peak = matmul_flops_per_s()
    tokens = idx.numel()
    print(
        f"teacher: {teacher.shape.num_layers} layers, hidden {teacher.shape.hidden_size}; "
        f"{n_candidates} candidates ({n_candidates // len(students)} per slot); "
        f"batch {args.batch}x{args.seq_len}"
    )
    print(f"one-teacher-pass step  {t_ours * 1e3:9.1f} ms")
    print(f"teacher per candidate  {t_naive * 1e3:9.1f} ms")
    print(f"speed-up               {t_naive / t_ours:9.2f}x")
    print(f"step FLOPs             {step_flops / 1e9:9.2f} GFLOP ({tokens} tokens)")
    print(f"achieved               {step_flops / t_ours / 1e9:9.2f} GFLOP/s")
    print(f"dense fp32 matmul      {peak / 1e9:9.2f} GFLOP/s (1024^3, same threads)")
    print(f"fraction of matmul     {step_flops / t_ours / peak:9.1%}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
