"""Small, fast builds: the tiny shape, a handful of operators, short time caps. Never timing asserts."""

import pytest

from shared.schemas.lut import Build, ValidationRequest
from shared.schemas.operators import AttentionOp, IdentityOp, LinearOp, MLPOp

OPERATORS = [
    IdentityOp(),
    LinearOp(),
    AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8),
    MLPOp(intermediate_size=48),
]
QUICK = {"time_cap_s": 0.3, "min_runs": 8, "warmup_runs": 1}


@pytest.fixture
def build_request() -> Build:
    """tiny, prefill of 16 tokens, four operators (plus the teacher's two, always measured)."""
    return Build(shape="tiny", length=16, operators=OPERATORS, **QUICK)


@pytest.fixture
def validation_request() -> ValidationRequest:
    return ValidationRequest(count=3, **QUICK)


def hand_measurement(key, specs, latency_ms: float = 1.0):
    """A LutMeasurement with the given latency for every operator: store tests need data, not timing."""
    from services.profiler.costs import computed_activation_bytes, fixed_costs, static_costs
    from services.profiler.profiling import LutMeasurement
    from shared.schemas.lut import LutEntry, Measured, Stats
    from shared.schemas.operators import spec_hash, spec_name

    stats = Stats(median_ms=latency_ms, p10_ms=latency_ms, p90_ms=latency_ms, runs=8, cv=0.0)
    entries = [
        LutEntry(
            operator=s,
            name=spec_name(s),
            hash=spec_hash(s),
            latency=stats,
            costs=static_costs(
                s, key, latency_ms=latency_ms, activation_bytes=computed_activation_bytes(s, key)
            ),
        )
        for s in specs
    ]
    fixed = fixed_costs(key, latency_ms=latency_ms, activation_bytes=computed_activation_bytes(None, key))
    return LutMeasurement(
        fixed=Measured(latency=stats, costs=fixed),
        entries=entries,
        activation_method="computed",
        clock="thread_time",
        build_seconds=0.1,
        drift=0.0,
        stable=True,
    )
