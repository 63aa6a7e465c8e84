import math

import pytest
import torch

from services.profiler.measuring import Measurand, measure, quantile_ci_relative, stats_of

CPU = torch.device("cpu")


def test_stats_are_order_statistics_of_the_samples():
    samples = [1_000_000 * v for v in (5, 1, 4, 2, 3, 9, 8, 7, 6, 10)]  # 1..10 ms
    stats = stats_of(samples)
    assert stats.median_ms == 5.5
    assert (stats.p10_ms, stats.p90_ms, stats.runs) == (2.0, 10.0, 10)
    assert math.isclose(stats.cv, math.sqrt(8.25) / 5.5)


def test_quantile_interval_narrows_with_more_samples_and_is_zero_for_constant_ones():
    assert quantile_ci_relative([1000] * 7) == math.inf  # too few to say
    assert quantile_ci_relative([1000] * 50) == 0.0
    spread = [1000 + (i % 10) * 10 for i in range(40)]
    assert quantile_ci_relative(spread * 10) < quantile_ci_relative(spread)
    # the median of 1..101 is 51; its interval spans the order statistics 50.5 -+ 1.96 sqrt(101) / 2,
    # rounded outwards: the 41st and the 62nd
    assert quantile_ci_relative(list(range(1, 102)), q=0.5) == pytest.approx((62 - 41) / (2 * 51))


def test_every_measurand_gets_min_runs_and_reset_before_every_timed_call():
    calls = {"a": [], "b": []}

    def measurand(name):
        def reset():
            calls[name].append("reset")

        def run():
            assert calls[name][-1] == "reset"  # the untimed reset always precedes the call
            calls[name].append("run")

        return Measurand(run=run, reset=reset)

    stats = measure(
        {"a": measurand("a"), "b": measurand("b")},
        device=CPU,
        min_runs=12,
        target_ci=1e-9,  # never tight enough: the time cap ends it
        time_cap_s=0.0,
        warmup_runs=2,
    )
    assert stats["a"].runs == stats["b"].runs == 12
    assert calls["a"].count("run") == 2 + 12


def test_progress_reaches_one_and_a_tight_measurand_stops_early():
    seen = []
    x = torch.randn(64, 64)
    stats = measure(
        {"matmul": Measurand(run=lambda: x @ x)},
        device=CPU,
        min_runs=8,
        target_ci=0.5,
        time_cap_s=60.0,
        warmup_runs=1,
        on_progress=seen.append,
    )
    assert stats["matmul"].runs < 10_000  # stopped on the interval, long before the cap
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)
