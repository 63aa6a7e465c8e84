"""Refusing, before anything runs, jobs that would not fit the device's memory or would take hours.

Time is estimated from FLOPs at the matmul rate measured by the device probe plus a per-call overhead;
memory from exact weight and KV-cache bytes and computed activations. Both are rough on purpose: they
tell a build of minutes from one of hours, and a fitting one from one that cannot.
"""

from services.profiler.costs import computed_activation_bytes, flops, tokens
from services.profiler.device import DeviceInfo
from services.profiler.lookup import NotMeasured, estimate
from services.profiler.profiling import architectures_to_time, measured_operators
from shared.costs import (
    MEMORY_SHARE,
    cached_tokens,
    fixed_weight_bytes,
    kv_bytes_per_token,
    weight_bytes,
)
from shared.errors import invalid
from shared.schemas.lut import DTYPE_BYTES, Build, Lut, ValidationRequest
from shared.settings import Settings

CALL_OVERHEAD_S = 50e-6  # interpreter and kernel-launch time of one module call, roughly


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def check_build(request: Build, device: DeviceInfo, settings: Settings) -> None:
    """422 naming the field when the LUT would not fit in memory or would take too long."""
    if request.time_cap_s > settings.profiler_max_job_s:
        raise invalid("time_cap_s", f"exceeds this profiler's limit of {settings.profiler_max_job_s:.0f} s")
    specs = measured_operators(request)
    dtype_bytes = DTYPE_BYTES[request.dtype]
    new, cached = tokens(request)
    weights = sum(weight_bytes(s, request.shape, dtype_bytes) for s in specs)
    weights += fixed_weight_bytes(request.shape, dtype_bytes)
    per_tokens = (
        request.batch
        * cached_tokens(request.shape, cached + new)
        * sum(kv_bytes_per_token(s, dtype_bytes) for s in specs)
    )
    per_tokens += max(computed_activation_bytes(s, request) for s in [None, *specs])
    available = device.memory_bytes * MEMORY_SHARE
    if weights + per_tokens > available:
        field = "length" if per_tokens > weights else ("operators" if request.operators else "shape")
        raise invalid(
            field,
            f"the LUT needs about {_gib(weights + per_tokens)} ({_gib(weights)} of weights, "
            f"{_gib(per_tokens)} of KV caches and activations); {device.name} offers {_gib(available)}",
        )
    rate = device.gflops[request.dtype] * 1e9
    call_s = sum(flops(s, request) / rate + CALL_OVERHEAD_S for s in [None, *specs])
    least_s = (request.warmup_runs + request.min_runs) * call_s
    if least_s > settings.profiler_max_job_s:
        raise invalid(
            "length",
            f"the LUT would take about {_duration(least_s)} on {device.name} (limit "
            f"{_duration(settings.profiler_max_job_s)}); "
            "use a shorter length, a smaller batch or fewer operators",
        )


def check_validation(lut: Lut, request: ValidationRequest, device: DeviceInfo, settings: Settings) -> None:
    """422 when one whole model does not fit, or timing count of them would take too long."""
    if request.time_cap_s > settings.profiler_max_job_s:
        raise invalid("time_cap_s", f"exceeds this profiler's limit of {settings.profiler_max_job_s:.0f} s")
    estimates = []
    for i, architecture in enumerate(architectures_to_time(lut, request)):
        try:
            estimates.append(estimate(lut, architecture))
        except (NotMeasured, ValueError) as exc:  # an operator the LUT lacks; a slot the model lacks
            slot = str(exc).split(":", 1)[0]
            raise invalid(f"body.architectures.{i}.choices.{slot}", str(exc)) from None
    largest = max(e.memory_bytes for e in estimates)
    if largest > device.memory_bytes * MEMORY_SHARE:
        raise invalid(
            "lut_id",
            f"a whole model of this shape needs up to {_gib(largest)}; {device.name} offers "
            f"{_gib(device.memory_bytes * MEMORY_SHARE)}",
        )
    least_s = (request.warmup_runs + request.min_runs) * sum(e.latency_ms / 1e3 for e in estimates)
    if least_s > settings.profiler_max_job_s:
        raise invalid(
            "count",
            f"timing {len(estimates)} models would take about {_duration(least_s)} (limit "
            f"{_duration(settings.profiler_max_job_s)})",
        )
