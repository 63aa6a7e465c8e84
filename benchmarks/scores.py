"""Scores: running each (slot, candidate) from its slot on, from cached teacher inputs, vs
recomputing the full forward pass with the slot replaced, measured in one run.

    .venv/bin/python -m benchmarks.scores [--teacher DIR] [--threads 1]
"""

import os
import statistics
import time

import torch

from benchmarks.common import batches, four_candidates, load_teacher, parser, set_threads, with_fixed
from services.trainer.learning.distill import build_students, capture
from services.trainer.learning.scores import score_table
from shared.model import Decoder


@torch.no_grad()
def naive_scores(teacher: Decoder, students, data):
    """Full forward per (slot, candidate): the slot swapped in, everything recomputed."""

    def mean_loss(model):
        return sum(model.loss(idx, tgt).item() for idx, tgt in data) / len(data)

    base = mean_loss(teacher)
    scores = {}
    for slot, modules in students.items():
        original = teacher.operator(slot)
        layer, attr = int(slot.split(".")[0][5:]), "attention" if slot.endswith("attn") else "mlp"
        for cid, module in modules.items():
            setattr(teacher.blocks[layer], attr, module)
            scores.setdefault(slot, {})[cid] = mean_loss(teacher) - base
        setattr(teacher.blocks[layer], attr, original)
    return base, scores


def main() -> None:
    args = parser(__doc__).parse_args()
    set_threads(args.threads)
    teacher = load_teacher(args.teacher)
    specs = with_fixed(teacher.shape, four_candidates(teacher.shape))
    raw = batches(teacher.shape, 1, args.batch, args.seq_len, seed=1)
    data = [(b[:, :-1], b[:, 1:]) for b in raw]
    trainable, fixed = build_students(teacher, specs, capture(teacher, data[0][0]), seed=0)
    students = {slot: {**fixed.get(slot, {}), **trainable.get(slot, {})} for slot in specs}

    t_ours, t_naive = [], []
    for _ in range(args.repeats):  # alternate, so a neighbour's load hits both alike
        start = time.perf_counter()
        _, ours = score_table(teacher, students, data)
        t_ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        _, naive = naive_scores(teacher, students, data)
        t_naive.append(time.perf_counter() - start)
    t_ours, t_naive = statistics.median(t_ours), statistics.median(t_naive)
    worst = max(abs(ours[s][c] - naive[s][c]) for s in ours for c in ours[s])
    pairs = sum(len(m) for m in students.values())
    print(
        f"teacher: {teacher.shape.num_layers} layers; {pairs} (slot, candidate) pairs; "
        f"{len(data)} batches of {args.batch}x{args.seq_len}; median of {args.repeats} alternating runs"
    )
    print(f"cached slot inputs   {t_ours:8.2f} s")
    print(f"full recomputation   {t_naive:8.2f} s")
    print(f"speed-up             {t_naive / t_ours:8.2f}x   (largest score difference {worst:.2e})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
