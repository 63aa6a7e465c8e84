import time

import pytest
import torch

from services.profiler import profiling
from services.profiler.measuring import Measurand
from services.profiler.profiling import (
    Bench,
    build_lut,
    error_summary,
    identity_architecture,
    measured_operators,
    random_architectures,
    unsaved_lut,
    validate_lut,
)
from shared.candidates import all_candidates
from shared.costs import weight_bytes
from shared.model import Decoder
from shared.operators import build_operator
from shared.schemas.lut import Build, LutKey
from shared.schemas.operators import AttentionOp, IdentityOp, MLPOp, fits, spec_hash
from shared.settings import Settings


@pytest.mark.parametrize("regime", ["prefill", "decode"])
def test_an_operator_is_timed_as_the_model_runs_it(regime):
    """x + op(x), with the KV cache rewound to the regime's context before every call."""
    key = LutKey(shape="tiny", regime=regime, length=12)
    bench = Bench(key, torch.device("cpu"))
    spec = AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8)
    model = Decoder(key.shape, identity_architecture(2))  # every other slot skipped
    torch.manual_seed(0)
    m = bench.operator(spec)
    torch.manual_seed(0)
    model.set_operator("block0.attn", build_operator(spec, key.shape), spec)
    caches = model.new_caches(1, 13)
    caches[0].length = 12 if regime == "decode" else 0
    with torch.inference_mode():
        m.reset()
        first = m.run()
        m.reset()
        again = m.run()  # the same call again, not one token further
        expected = model.forward_slots(bench.x, 0, caches)
    assert first.shape == (1, 1 if regime == "decode" else 12, 64)
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, expected)


def test_the_teachers_are_always_measured_and_the_default_is_the_pool():
    request = Build(shape="tiny", length=8, operators=[MLPOp(intermediate_size=16)])
    specs = measured_operators(request)
    assert specs[:2] == [AttentionOp(num_heads=4, num_kv_heads=2, head_dim=16), MLPOp(intermediate_size=176)]
    assert specs[2:] == [MLPOp(intermediate_size=16)]
    default = measured_operators(Build(shape="tiny", length=8))
    assert len(default) == len(set(default)) and set(default) == set(all_candidates(request.shape))


def test_build_measures_every_operator_and_the_fixed_part(build_request):
    progress = []
    m = build_lut(build_request, Settings(), lambda f, msg: progress.append((f, msg)))
    specs = measured_operators(build_request)
    assert [e.operator for e in m.entries] == specs
    assert (m.activation_method, m.clock) == ("computed", "thread_time")
    for entry in m.entries:
        assert entry.hash == spec_hash(entry.operator)
        assert entry.costs.weight_bytes == weight_bytes(entry.operator, build_request.shape, 4)
        assert entry.costs.params * 4 == entry.costs.weight_bytes
        assert entry.costs.latency_ms == entry.latency.p10_ms
        if isinstance(entry.operator, IdentityOp):  # blocks skip identity: nothing to time, no cost
            assert (
                entry.latency.runs == 0 and entry.costs.latency_ms == 0 and entry.costs.activation_bytes == 0
            )
        else:
            assert entry.latency.runs >= build_request.min_runs
            assert 0 < entry.latency.p10_ms <= entry.latency.median_ms <= entry.latency.p90_ms
            assert entry.costs.activation_bytes > 0
    fixed = Decoder(build_request.shape, identity_architecture(2))
    assert m.fixed.costs.params == sum(p.numel() for p in fixed.parameters())
    assert m.fixed.latency.runs >= build_request.min_runs and m.fixed.costs.kv_bytes_per_token == 0
    assert progress[-1][0] == 1.0


def test_random_architectures_are_deterministic_and_use_fitting_lut_operators(build_request):
    m = build_lut(build_request, Settings(), lambda f, msg: None)
    lut = unsaved_lut(build_request, m)
    first, again = random_architectures(lut, 5, seed=3), random_architectures(lut, 5, seed=3)
    assert first == again and first != random_architectures(lut, 5, seed=4)
    measured = {e.operator for e in lut.entries}
    for arch in first:
        assert all(spec in measured and fits(spec, slot_type) for _, slot_type, spec in arch.slots())


def test_validation_times_whole_models_against_the_prediction(build_request, validation_request):
    m = build_lut(build_request, Settings(), lambda f, msg: None)
    lut = unsaved_lut(build_request, m)
    # memory for one model at a time: the groups mechanism is exercised too
    validated = validate_lut(
        lut, validation_request, Settings(), memory_bytes=1, on_progress=lambda f, msg: None
    )
    assert len(validated.results) == validation_request.count
    for r in validated.results:
        assert r.measured.runs >= validation_request.min_runs
        assert r.error == pytest.approx((r.predicted_ms - r.measured.p10_ms) / r.measured.p10_ms)
    assert -1 < validated.drift < 100  # the reference parts were timed beside the models
    median, worst = error_summary(validated.results)
    assert 0 <= median <= worst


def spinning(measurand: Measurand, factor: float) -> Measurand:
    """The same call on a device `factor` times slower: it burns CPU for (factor - 1) x its own time."""

    def run():
        started = time.thread_time()
        out = measurand.run()
        spent = time.thread_time() - started
        while time.thread_time() - started < factor * spent:
            pass
        return out

    return Measurand(run=run, reset=measurand.reset)


def test_a_build_whose_device_slowed_down_times_again_then_reports_itself_unstable(
    build_request, sqlite_settings, monkeypatch
):
    """The device runs at half speed whenever the build re-times its parts (every second call of
    `measure`: time all, re-check, time all again, re-check)."""
    calls = []
    original = profiling.measure

    def slower_at_each_recheck(measurands, **kwargs):
        calls.append(1)
        if len(calls) % 2 == 0:
            measurands = {key: spinning(m, 2.0) for key, m in measurands.items()}
        return original(measurands, **kwargs)

    monkeypatch.setattr(profiling, "measure", slower_at_each_recheck)
    messages = []
    measurement = build_lut(build_request, sqlite_settings, lambda _f, message: messages.append(message))
    assert len(calls) == 4  # timed everything again once, then gave up
    assert any("timing everything again" in m for m in messages)
    assert not measurement.stable and measurement.drift > 0.5


def test_a_build_on_a_steady_device_says_how_far_it_moved(build_request, sqlite_settings):
    request = build_request.model_copy(update={"stability_threshold": 1.0})  # this machine is shared
    measurement = build_lut(request, sqlite_settings, lambda *_: None)
    assert measurement.stable and abs(measurement.drift) < 1.0
