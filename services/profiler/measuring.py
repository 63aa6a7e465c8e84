"""Timing torch callables on one device: warm-up, interleaved rounds, robust statistics.

Everything measured together runs in interleaved rounds -- one run of each, in a fresh random order
per round -- so a change in the machine's load (other processes, frequency, a neighbour's job) hits all
of them alike instead of biasing whichever happened to be measured at the time, and each run finds the
caches as a previous, different computation left them, as it would inside a whole model. Each sample
is a single call; the median of many is robust to the preemptions a shared machine causes.
"""

import gc
import math
import random
import statistics
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch

from shared.schemas.lut import Stats

Z95 = 1.96  # two-sided 95% normal quantile
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Measurand:
    """One thing to time: `reset` runs untimed before every call (rewinds KV caches), `run` is timed."""

    run: Callable[[], object]
    reset: Callable[[], None] = lambda: None


def stats_of(samples_ns: list[int]) -> Stats:
    ms = sorted(s / 1e6 for s in samples_ns)
    mean = statistics.fmean(ms)
    return Stats(
        median_ms=statistics.median(ms),
        p10_ms=_quantile(ms, 0.10),
        p90_ms=_quantile(ms, 0.90),
        runs=len(ms),
        cv=statistics.pstdev(ms) / mean if mean > 0 else 0.0,
    )


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def median_ci_relative(samples: list[int]) -> float:
    """Half-width of the distribution-free 95% confidence interval of the median, relative to it.

    The interval lies between the order statistics n/2 -+ 1.96 sqrt(n)/2 (normal approximation of the
    binomial), so it needs no assumption about the shape of the timing distribution.
    """
    n = len(samples)
    if n < 8:
        return math.inf
    ordered = sorted(samples)
    half = Z95 * math.sqrt(n) / 2
    lo, hi = ordered[max(0, math.floor(n / 2 - half))], ordered[min(n - 1, math.ceil(n / 2 + half))]
    median = statistics.median(ordered)
    return (hi - lo) / (2 * median) if median > 0 else 0.0


class Clock:
    """Wall time of one call: perf_counter_ns on CPU; CUDA events on an idle, synchronised GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)

    def __call__(self, run: Callable[[], object]) -> int:
        if self.cuda:
            # every call starts on an idle GPU, so launch gaps count as they do in the whole model
            torch.cuda.synchronize()
            self.start.record()
            run()
            self.end.record()
            self.end.synchronize()
            return round(self.start.elapsed_time(self.end) * 1e6)
        t0 = time.perf_counter_ns()
        run()
        return time.perf_counter_ns() - t0


@contextmanager
def _quiet() -> Iterator[None]:
    """No autograd and no garbage-collector pauses inside timed regions."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_enabled:
            gc.enable()


def measure(
    measurands: dict[K, Measurand],
    *,
    device: torch.device,
    min_runs: int,
    target_ci: float,
    time_cap_s: float,
    warmup_runs: int = 5,
    seed: int = 0,
    on_progress: Callable[[float], None] = lambda _fraction: None,
) -> dict[K, Stats]:
    """Median, p10, p90, run count and CV of each measurand's call time.

    Rounds go on while some measurand has fewer than min_runs samples, or its median's 95% interval is
    wider than +-target_ci (relative) and the time cap has not been reached.
    """
    clock = Clock(device)
    rng = random.Random(seed)
    samples: dict[K, list[int]] = {key: [] for key in measurands}
    with _quiet():
        for _ in range(warmup_runs):
            for m in measurands.values():
                m.reset()
                m.run()
        started = time.monotonic()
        pending = list(measurands)
        while pending:
            order = pending[:]
            rng.shuffle(order)
            for key in order:
                measurands[key].reset()
                samples[key].append(clock(measurands[key].run))
            in_time = time.monotonic() - started < time_cap_s
            pending = [
                key
                for key in pending
                if len(samples[key]) < min_runs or (in_time and median_ci_relative(samples[key]) > target_ci)
            ]
            elapsed = (time.monotonic() - started) / max(time_cap_s, 1e-9)
            on_progress(min(1.0, max(elapsed, 1 - len(pending) / len(measurands))))
    return {key: stats_of(s) for key, s in samples.items()}


def peak_cuda_bytes(m: Measurand, device: torch.device) -> int:
    """Bytes the CUDA allocator holds at the call's peak beyond what was allocated before it."""
    with torch.inference_mode():
        torch.cuda.synchronize(device)
        m.reset()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        m.run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
