"""Search speed: the fast solver vs the straightforward method (PuLP + CBC), side by side in one run.

    .venv/bin/python -m benchmarks.search            # about 10 minutes on 2 cores
    .venv/bin/python -m benchmarks.search --sizes 64x15 --ks 1 10
    .venv/bin/python -m benchmarks.search --memory 0.5 --ks 1 10   # with a whole-model memory budget

For each synthetic instance (services/search/synthetic.py: latency budget 50% and params budget 60% of
the teacher, max_overlap 0.7, gap 1e-3) and each K, both methods run on the same problem, one after the
other. Per method: wall time, solutions found, how many are proven within the gap, and the worst proven
gap. The straightforward method builds the model once and adds one overlap row per solution; CBC proves
its gapRel, so its worst gap is the gap asked for. Ratio = its time / ours.

With --memory F the instances also have memory costs and a fixed part, and a budget on the whole-model
memory_bytes = weight_bytes + kv_cache_bytes + activation_bytes (a peak cost) at F of the teacher's:
our solver searches ranges of peak levels (levels.py), CBC has a peak variable (ilp.py).
"""

import argparse
import time

from services.search.ilp import search_cbc
from services.search.levels import search_model
from services.search.outcome import relative_gap
from services.search.request import build_whole_model
from services.search.synthetic import synthetic_budgets, synthetic_fixed, synthetic_memory, synthetic_slots
from shared.settings import Settings

GAP = 1e-3


def run(method, problem, k: int, time_limit_s: float) -> dict:
    started = time.monotonic()
    outcome = method(problem, k=k, gap=GAP, time_limit_s=time_limit_s)
    seconds = time.monotonic() - started
    gaps = [relative_gap(f.objective, f.bound) for f in outcome.found]
    return {
        "time": seconds,
        "found": len(outcome.found),
        "proven": sum(f.optimal for f in outcome.found),
        "worst": max(gaps, default=float("nan")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", nargs="+", default=["64x15", "160x30", "320x30"], help="slots x candidates"
    )
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 10, 100])
    parser.add_argument("--time-limit", type=float, default=30.0, help="our time_limit_s per request")
    parser.add_argument("--cap", type=float, default=120.0, help="time cap of the straightforward method")
    parser.add_argument(
        "--memory", type=float, help="also a whole-model memory budget, this fraction of the teacher's"
    )
    args = parser.parse_args()

    header = (
        f"{'slots x cand':>12} {'K':>4} | {'ours s':>7} {'found':>5} {'proven':>6} {'worst gap':>9} | "
        f"{'CBC s':>7} {'found':>5} {'proven':>6} {'worst gap':>9} | {'time ratio':>10}"
    )
    note = f", memory {args.memory} of the teacher's (peak activations)" if args.memory else ""
    print(f"gap {GAP}, ours capped at {args.time_limit} s, PuLP+CBC at {args.cap} s{note}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        num_slots, num_candidates = map(int, size.split("x"))
        memory = synthetic_memory(args.memory) if args.memory else {"budgets": []}
        problem = build_whole_model(
            synthetic_slots(num_slots, num_candidates, memory=bool(args.memory)),
            synthetic_budgets() + memory.pop("budgets"),
            fixed=synthetic_fixed(num_slots) if args.memory else {},
            max_overlap=0.7,
            settings=Settings(),
            **memory,
        )
        for k in args.ks:
            ours = run(search_model, problem, k, args.time_limit)
            cbc = run(search_cbc, problem, k, args.cap)
            ratio = cbc["time"] / ours["time"]
            more = "" if cbc["found"] == k else ">="  # the baseline stopped at its cap
            print(
                f"{size:>12} {k:>4} | {ours['time']:>7.2f} {ours['found']:>5} {ours['proven']:>6} "
                f"{ours['worst']:>9.1e} | {cbc['time']:>7.2f} {cbc['found']:>5} {cbc['proven']:>6} "
                f"{cbc['worst']:>9.1e} | {more + f'{ratio:.1f}x':>10}",
                flush=True,
            )


if __name__ == "__main__":
    main()
