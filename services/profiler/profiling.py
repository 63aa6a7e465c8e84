"""Building a LUT and validating it: operators, the fixed part and whole models, timed on the device.

An operator is timed as the model runs it -- residual(op, x) = x + op(x), its KV cache rewound to the
regime's context before each call -- so that a whole model is the fixed part plus its operators. The
fixed part is the model with every slot set to identity: embedding, the model's own per-slot overhead
(the loop over slots, the checks that skip identity slots), final norm and LM head. Identity costs
nothing beyond that: the model skips it.
"""

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import torch

from services.profiler.costs import computed_activation_bytes, fixed_costs, static_costs, tokens
from services.profiler.device import torch_device
from services.profiler.lookup import estimate
from services.profiler.measuring import Clock, Measurand, measure, peak_cuda_bytes
from shared.candidates import all_candidates
from shared.model import Decoder, residual
from shared.operators import build_operator
from shared.schemas.lut import (
    Build,
    Lut,
    LutEntry,
    LutKey,
    Measured,
    Measuring,
    Stats,
    ValidatedArchitecture,
    ValidationRequest,
    shape_hash,
)
from shared.schemas.operators import (
    Architecture,
    AttentionOp,
    IdentityOp,
    LayerChoice,
    OperatorSpec,
    fits,
    spec_hash,
    spec_name,
    teacher_operator,
)
from shared.settings import Settings

FIXED = "fixed"
RECHECK_SHARE = 0.1  # of the time cap, spent re-timing every part at the end of a build or validation
NOT_TIMED = Stats(median_ms=0.0, p10_ms=0.0, p90_ms=0.0, runs=0, cv=0.0)

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class LutMeasurement:
    fixed: Measured
    entries: list[LutEntry]
    activation_method: str
    clock: str
    build_seconds: float
    drift: float  # every part re-timed at the end of the build against the build's own timing
    stable: bool  # |drift| within the build's stability threshold


def unsaved_lut(key: LutKey, measurement: LutMeasurement) -> Lut:
    """A measurement as a LUT that is not stored (id and device 0): for benchmarks and dry runs."""
    return Lut(
        id=0,
        device_id=0,
        shape=key.shape,
        shape_hash=shape_hash(key.shape),
        regime=key.regime,
        batch=key.batch,
        length=key.length,
        dtype=key.dtype,
        operator_count=len(measurement.entries),
        activation_method=measurement.activation_method,
        clock=measurement.clock,
        build_seconds=measurement.build_seconds,
        drift=measurement.drift,
        stable=measurement.stable,
        measured_at=datetime.now(UTC),
        fixed=measurement.fixed,
        entries=measurement.entries,
    )


def measured_operators(request: Build) -> list[OperatorSpec]:
    """The request's operators (default: the candidate pool) and always the teacher's two, deduplicated."""
    shape = request.shape
    teachers = [teacher_operator(shape, "attention"), teacher_operator(shape, "mlp")]
    return list(dict.fromkeys(teachers + (request.operators or all_candidates(shape))))


def identity_architecture(num_layers: int) -> Architecture:
    """Every slot skipped: what remains is the fixed part."""
    return Architecture.from_layers([LayerChoice(attention=IdentityOp(), mlp=IdentityOp())] * num_layers)


class Bench:
    """Inputs and modules for one LUT key on one device, ready to be timed."""

    def __init__(self, key: LutKey, device: torch.device, seed: int = 0):
        self.key, self.device = key, device
        if device.type == "cuda":
            torch.cuda.set_device(device)  # events and synchronisation act on the current device
        self.dtype = getattr(torch, key.dtype)
        self.new, self.cached = tokens(key)
        generator = torch.Generator().manual_seed(seed)
        shape = key.shape
        self.x = torch.randn(key.batch, self.new, shape.hidden_size, generator=generator).to(
            device, self.dtype
        )
        self.idx = torch.randint(0, shape.vocab_size, (key.batch, self.new), generator=generator).to(device)

    def operator(self, spec: OperatorSpec) -> Measurand:
        op = build_operator(spec, self.key.shape).to(device=self.device, dtype=self.dtype).eval()
        cache = (
            op.new_cache(self.key.batch, self.cached + self.new) if isinstance(spec, AttentionOp) else None
        )
        x = self.x

        def rewind() -> None:
            cache.length = self.cached

        return Measurand(
            run=lambda: residual(op, x, cache), reset=rewind if cache is not None else lambda: None
        )

    def model(self, architecture: Architecture) -> Measurand:
        model = Decoder(self.key.shape, architecture).to(device=self.device, dtype=self.dtype).eval()
        caches = model.new_caches(self.key.batch, self.cached + self.new)
        idx = self.idx

        def rewind() -> None:
            for cache in caches:
                if cache is not None:
                    cache.length = self.cached

        return Measurand(run=lambda: model(idx, caches), reset=rewind)


def build_lut(request: Build, settings: Settings, on_progress: Progress) -> LutMeasurement:
    """Time every operator and the fixed part in interleaved rounds; weigh their memory."""
    started = time.monotonic()
    torch.set_num_threads(settings.torch_threads)
    torch.manual_seed(0)
    device = torch_device(settings)
    specs = measured_operators(request)
    on_progress(0.0, f"building {len(specs)} operators and the fixed part")
    bench = Bench(request, device)
    measurands = {FIXED: bench.model(identity_architecture(request.shape.num_layers))}
    measurands |= {spec_hash(s): bench.operator(s) for s in specs if not isinstance(s, IdentityOp)}

    if device.type == "cuda":
        activations = {key: peak_cuda_bytes(m, device) for key, m in measurands.items()}
    else:
        activations = {spec_hash(s): computed_activation_bytes(s, request) for s in specs}
        activations[FIXED] = computed_activation_bytes(None, request)
    activations.setdefault(spec_hash(IdentityOp()), 0)

    # Timed twice at most: a build that finds the device's speed moved during it measures again, then
    # reports itself unstable if it moved again (its LUT would mix two speeds).
    for attempt in range(2):
        share = (0.5, 0.4) if attempt else (0.0, 0.9)  # (start, span) of the progress bar
        stats = measure(
            measurands,
            device=device,
            min_runs=request.min_runs,
            target_ci=request.target_ci,
            time_cap_s=request.time_cap_s,
            warmup_runs=request.warmup_runs,
            on_progress=lambda f, s=share: on_progress(
                s[0] + f * s[1], f"timing {len(measurands)} parts in interleaved rounds"
            ),
        )
        on_progress(0.9, "re-timing every part: did the device's speed move?")
        drift = device_drift(measurands, {key: s.p10_ms for key, s in stats.items()}, request, device)
        if abs(drift) <= request.stability_threshold:
            break
        on_progress(
            0.5, f"the device ran {drift:+.1%} against the start of the build: timing everything again"
        )
    on_progress(1.0, "measured" if abs(drift) <= request.stability_threshold else "measured, unstable")
    fixed_stats = stats.pop(FIXED)
    entries = []
    for spec in specs:
        key = spec_hash(spec)
        latency = stats.get(key, NOT_TIMED)
        costs = static_costs(spec, request, latency_ms=latency.p10_ms, activation_bytes=activations[key])
        entries.append(LutEntry(operator=spec, name=spec_name(spec), hash=key, latency=latency, costs=costs))
    fixed = Measured(
        latency=fixed_stats,
        costs=fixed_costs(request, latency_ms=fixed_stats.p10_ms, activation_bytes=activations[FIXED]),
    )
    return LutMeasurement(
        fixed=fixed,
        entries=entries,
        activation_method="measured" if device.type == "cuda" else "computed",
        clock=Clock(device).kind,
        build_seconds=time.monotonic() - started,
        drift=drift,
        stable=abs(drift) <= request.stability_threshold,
    )


def device_drift(
    measurands: dict[str, Measurand], then_ms: dict[str, float], options: Measuring, device: torch.device
) -> float:
    """How much slower (+) or faster (-) the parts run now than `then_ms` (their p10s), timed together
    in interleaved rounds as a build times them: a part timed among fewer others runs in warmer caches
    (the tiny preset's fixed part and teacher operators timed alone ran 13-15% faster on this CPU),
    which would read as the device moving."""
    now = measure(
        measurands,
        device=device,
        min_runs=options.min_runs,
        target_ci=options.target_ci,
        time_cap_s=RECHECK_SHARE * options.time_cap_s,
        warmup_runs=options.warmup_runs,
        seed=1,
    )
    then = sum(then_ms[key] for key in now)
    return sum(s.p10_ms for s in now.values()) / then - 1 if then > 0 else 0.0


def random_architectures(lut: Lut, count: int, seed: int) -> list[Architecture]:
    """count architectures, each slot's operator drawn uniformly from the LUT's that fit it."""
    rng = random.Random(seed)
    specs = [e.operator for e in lut.entries]
    pools = {t: [s for s in specs if fits(s, t)] for t in ("attention", "mlp")}
    return [
        Architecture.from_layers(
            LayerChoice(attention=rng.choice(pools["attention"]), mlp=rng.choice(pools["mlp"]))
            for _ in range(lut.shape.num_layers)
        )
        for _ in range(count)
    ]


def architectures_to_time(lut: Lut, request: ValidationRequest) -> list[Architecture]:
    """The architectures a validation times: the ones it was given, or `count` random ones."""
    if request.architectures is not None:
        return list(request.architectures)
    return random_architectures(lut, request.count, request.seed)


def models_per_group(lut: Lut, architectures: list[Architecture], memory_bytes: int) -> int:
    """How many whole models to hold (and interleave) at once within the memory share."""
    largest = max(estimate(lut, a).memory_bytes for a in architectures)
    return max(1, int(memory_bytes // largest))


@dataclass(frozen=True)
class ValidationMeasurement:
    results: list[ValidatedArchitecture]
    drift: float


def lut_parts(lut: Lut, bench: Bench) -> tuple[dict[str, Measurand], dict[str, float]]:
    """Every timed part of a LUT, built again, with its p10 in the LUT: what a validation re-times to
    see whether the device still runs at the LUT's speed."""
    parts = {FIXED: bench.model(identity_architecture(lut.shape.num_layers))}
    parts |= {e.hash: bench.operator(e.operator) for e in lut.entries if e.latency.runs > 0}
    then_ms = {FIXED: lut.fixed.latency.p10_ms} | {e.hash: e.latency.p10_ms for e in lut.entries}
    return parts, then_ms


def validate_lut(
    lut: Lut, request: ValidationRequest, settings: Settings, memory_bytes: int, on_progress: Progress
) -> ValidationMeasurement:
    """Build architectures (given, or random) as whole models, time them end to end, compare with the
    prediction.

    Then every part of the LUT is timed again as the build timed it: drift is how much slower (+) or
    faster (-) they ran than in the LUT, a device that changed speed since the build (clocks, load,
    thermals).
    """
    torch.set_num_threads(settings.torch_threads)
    torch.manual_seed(0)
    device = torch_device(settings)
    architectures = architectures_to_time(lut, request)
    group = models_per_group(lut, architectures, memory_bytes)
    bench = Bench(lut.key(), device)
    measured: list[Stats] = []
    for start in range(0, len(architectures), group):
        chunk = architectures[start : start + group]
        done = 0.9 * start / len(architectures)
        on_progress(done, f"building models {start + 1}-{start + len(chunk)} of {len(architectures)}")
        measurands = {i: bench.model(a) for i, a in enumerate(chunk)}
        stats = measure(
            measurands,
            device=device,
            min_runs=request.min_runs,
            target_ci=request.target_ci,
            time_cap_s=request.time_cap_s * len(chunk) / len(architectures),
            warmup_runs=request.warmup_runs,
            seed=request.seed,
            on_progress=lambda f, d=done, n=len(chunk): on_progress(
                d + 0.9 * f * n / len(architectures), "timing whole models in interleaved rounds"
            ),
        )
        measured += [stats[i] for i in range(len(chunk))]
        del measurands
    on_progress(0.9, "re-timing the LUT's parts: did the device's speed move since the build?")
    parts, then_ms = lut_parts(lut, bench)
    drift = device_drift(parts, then_ms, request, device)
    results = []
    for architecture, stats in zip(architectures, measured, strict=True):
        predicted = estimate(lut, architecture).latency_ms
        error = (predicted - stats.p10_ms) / stats.p10_ms
        results.append(
            ValidatedArchitecture(
                architecture=architecture, predicted_ms=predicted, measured=stats, error=error
            )
        )
    return ValidationMeasurement(results=results, drift=drift)


def error_summary(results: list[ValidatedArchitecture]) -> tuple[float, float]:
    """(median, worst) of |predicted - measured| / measured."""
    errors = [abs(r.error) for r in results]
    return statistics.median(errors), max(errors)
