"""Is a LUT build stable? The same build and validation of one shape, several times in a row.

    .venv/bin/python -m benchmarks.lut_stability [--builds 5] [--shape tiny] [--length 128]

Each round: a LUT build (which re-times all its parts at its end, timing everything again if
they moved, and says whether it is stable), then a validation of held-out random architectures (a
seed of their own each round, so no round validates what another did) timed whole against the LUT.
Per round: the build's own drift and verdict, whether it timed twice, the validation's median and
worst |error| and the device's drift between the build and the validation. The code the profiler's
jobs run, in this process; the load average is printed, since a shared machine moves the figures.
"""

import argparse
import os
import statistics

from services.profiler.profiling import build_lut, error_summary, unsaved_lut, validate_lut
from shared.schemas.lut import Build, ValidationRequest
from shared.settings import Settings


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--builds", type=int, default=5)
    p.add_argument("--shape", default="tiny")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--time-cap-s", type=float, default=60.0)
    args = p.parse_args()
    settings = Settings()
    request = Build(shape=args.shape, length=args.length, time_cap_s=args.time_cap_s)
    print(f"{args.shape} @ {args.length}, prefill, batch 1; {args.count} random architectures per validation")
    print(
        f"{'round':>5s} {'build s':>8s} {'timed':>6s} {'build drift':>12s} {'stable':>7s} "
        f"{'median |err|':>13s} {'worst':>7s} {'drift at validation':>20s} {'load':>16s}"
    )
    medians, worsts = [], []
    for round_ in range(1, args.builds + 1):
        timings: list[str] = []
        measurement = build_lut(request, settings, lambda _f, message, said=timings: said.append(message))
        twice = any("timing everything again" in m for m in timings)
        lut = unsaved_lut(request, measurement)
        validation = ValidationRequest(count=args.count, seed=100 + round_, time_cap_s=args.time_cap_s)
        validated = validate_lut(lut, validation, settings, memory_bytes=2**40, on_progress=lambda *_: None)
        median, worst = error_summary(validated.results)
        medians.append(median)
        worsts.append(worst)
        print(
            f"{round_:5d} {measurement.build_seconds:8.1f} {'twice' if twice else 'once':>6s} "
            f"{measurement.drift:+12.2%} {measurement.stable!s:>7s} {median:13.2%} {worst:7.2%} "
            f"{validated.drift:+20.2%} {load():>16s}",
            flush=True,
        )
    print(
        f"over {args.builds} builds: median |error| {statistics.median(medians):.2%} "
        f"(range {min(medians):.2%}-{max(medians):.2%}), worst {max(worsts):.2%}"
    )


if __name__ == "__main__":
    main()
