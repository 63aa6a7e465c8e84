"""Timing torch callables on one device: warm-up, interleaved rounds, robust statistics.

Everything measured together runs in interleaved rounds -- one call of each, in a fresh random order
per round, every round until the last of them is known well -- so a change in the machine's speed
(other processes, frequency, a neighbour's job) hits all of them alike instead of biasing whichever
happened to be measured at the time, and each call finds the caches as a previous, different
computation left them, as it would inside a whole model. Each sample is a single call.

The cost a LUT keeps is the 10th percentile of the call times (COST_QUANTILE), beside the median and
p90: interference from other work only ever adds time, so a low quantile estimates the device's own
latency, and on a quiet device it differs from the median by little. Timing stops when that
quantile's 95% confidence interval is tight.
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
COST_QUANTILE = 0.10
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


def _quantile(sorted_values: list, q: float):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def quantile_ci_relative(samples: list[int], q: float = COST_QUANTILE) -> float:
    """Half-width of the distribution-free 95% confidence interval of the q-quantile, relative to it.

    The interval lies between the order statistics nq -+ 1.96 sqrt(nq(1-q)) (normal approximation of
    the binomial), so it needs no assumption about the shape of the timing distribution.
    """
    n = len(samples)
    if n < 8:
        return math.inf
    ordered = sorted(samples)
    half = Z95 * math.sqrt(n * q * (1 - q))
    lo = ordered[max(0, math.floor(n * q - half))]
    hi = ordered[min(n - 1, math.ceil(n * q + half))]
    value = _quantile(ordered, q)
    return (hi - lo) / (2 * value) if value > 0 else 0.0


class Clock:
    """Time of one call, by the clock that measures the call itself rather than the machine's load.

    cuda_events: every call starts on an idle, synchronised GPU, so launch gaps count as they do in a
    whole model. thread_time (CPU, torch on one thread): the calling thread's CPU time, which is the
    call's latency on a core of its own -- wall time on a shared machine also counts the time other
    processes hold the core, and that hits a long whole-model call far more often than a short operator
    call, biasing every comparison (measured: predictions 28% low in wall time, 3% in thread time, on the
    small shape at load 5 on 2 cores). perf_counter (CPU, several torch threads): wall time, as the
    other threads' work is not the calling thread's CPU time.
    """

    def __init__(self, device: torch.device):
        if device.type == "cuda":
            self.kind = "cuda_events"
            self.start = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
        else:
            self.kind = "thread_time" if torch.get_num_threads() == 1 else "perf_counter"
            self.now = time.thread_time_ns if self.kind == "thread_time" else time.perf_counter_ns

    def __call__(self, run: Callable[[], object]) -> int:
        if self.kind == "cuda_events":
            torch.cuda.synchronize()
            self.start.record()
            run()
            self.end.record()
            self.end.synchronize()
            return round(self.start.elapsed_time(self.end) * 1e6)
        t0 = self.now()
        run()
        return self.now() - t0


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

    Rounds of all measurands go on while one has fewer than min_runs samples, or, until the time cap,
    while one's COST_QUANTILE has a 95% interval wider than +-target_ci (relative).
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
        order = list(measurands)
        while True:
            rng.shuffle(order)
            for key in order:
                measurands[key].reset()
                samples[key].append(clock(measurands[key].run))
            runs = len(samples[order[0]])
            in_time = time.monotonic() - started < time_cap_s
            loose = sum(quantile_ci_relative(s) > target_ci for s in samples.values()) if in_time else 0
            if runs >= min_runs and not loose:
                break
            elapsed = (time.monotonic() - started) / max(time_cap_s, 1e-9)
            on_progress(min(0.99, max(elapsed, 1 - loose / len(order))))
        on_progress(1.0)
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
