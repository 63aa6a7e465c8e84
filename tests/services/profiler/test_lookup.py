"""Estimates and exports are arithmetic on a LUT: checked exactly on a hand-made one."""

from datetime import UTC, datetime

import pytest

from services.profiler.costs import computed_activation_bytes, fixed_costs, static_costs
from services.profiler.lookup import NotMeasured, cost_table, estimate
from shared.schemas.lut import COST_NAMES, Lut, LutEntry, LutKey, Measured, Stats, shape_hash
from shared.schemas.operators import (
    Architecture,
    AttentionOp,
    IdentityOp,
    LinearOp,
    MLPOp,
    spec_hash,
    spec_name,
    teacher_operator,
)
from shared.search_input import architecture_costs, merged

KEY = LutKey(shape="tiny", regime="decode", batch=2, length=100)
SHAPE = KEY.shape
LATENCY = {
    "identity": 0.0,
    "linear": 0.5,
    "attn_h4_kv2_d16": 3.0,
    "attn_h2_kv1_d8": 1.0,
    "mlp_i176": 2.0,
    "mlp_i48": 0.75,
}
SPECS = [
    IdentityOp(),
    LinearOp(),
    AttentionOp(num_heads=4, num_kv_heads=2, head_dim=16),
    AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8),
    MLPOp(intermediate_size=176),
    MLPOp(intermediate_size=48),
]


def stats(ms: float) -> Stats:
    return Stats(median_ms=ms, p10_ms=ms, p90_ms=ms, runs=10 if ms else 0, cv=0.0)


def entry(spec) -> LutEntry:
    ms = LATENCY[spec_name(spec)]
    costs = static_costs(spec, KEY, latency_ms=ms, activation_bytes=computed_activation_bytes(spec, KEY))
    return LutEntry(operator=spec, name=spec_name(spec), hash=spec_hash(spec), latency=stats(ms), costs=costs)


@pytest.fixture
def lut() -> Lut:
    fixed = fixed_costs(KEY, latency_ms=1.25, activation_bytes=computed_activation_bytes(None, KEY))
    return Lut(
        id=7,
        device_id=3,
        shape=SHAPE,
        shape_hash=shape_hash(SHAPE),
        regime=KEY.regime,
        batch=KEY.batch,
        length=KEY.length,
        dtype=KEY.dtype,
        operator_count=len(SPECS),
        activation_method="computed",
        clock="thread_time",
        build_seconds=1.0,
        drift=0.0,
        stable=True,
        measured_at=datetime.now(UTC),
        fixed=Measured(latency=stats(1.25), costs=fixed),
        entries=[entry(s) for s in SPECS],
    )


def test_estimate_is_fixed_plus_the_slots(lut):
    arch = (
        Architecture.teacher(SHAPE)
        .replace("block0.mlp", IdentityOp())
        .replace("block1.attn", AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8))
    )
    est = estimate(lut, arch)
    assert est.latency_ms == 1.25 + 3.0 + 0.0 + 1.0 + 2.0
    assert [s.slot for s in est.slots] == ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp"]
    assert [s.name for s in est.slots] == ["attn_h4_kv2_d16", "identity", "attn_h2_kv1_d8", "mlp_i176"]
    kv_per_token = (2 * 2 * 16 + 2 * 1 * 8) * 4
    assert est.kv_bytes_per_token == kv_per_token
    assert est.kv_cache_bytes == kv_per_token * 2 * 101  # batch 2, 100 cached + 1 new token
    assert est.params == lut.fixed.costs.params + sum(s.costs.params for s in est.slots)
    assert est.weight_bytes == 4 * est.params
    assert est.activation_bytes == max(
        [lut.fixed.costs.activation_bytes] + [s.costs.activation_bytes for s in est.slots]
    )
    assert est.memory_bytes == est.weight_bytes + est.kv_cache_bytes + est.activation_bytes


def test_estimate_names_the_slot_of_an_unmeasured_operator_and_refuses_a_wrong_depth(lut):
    with pytest.raises(NotMeasured, match=r"block1\.mlp: operator"):
        estimate(lut, Architecture.teacher(SHAPE).replace("block1.mlp", MLPOp(intermediate_size=64)))
    with pytest.raises(ValueError, match=r"block2\.attn"):
        estimate(lut, Architecture.from_layers(Architecture.teacher(SHAPE).layers * 2))


def test_export_is_the_search_request_shape_with_the_teacher_as_reference(lut):
    table = cost_table(lut)
    assert (table.lut_id, table.device_id) == (7, 3)
    assert [s.id for s in table.slots] == ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp"]
    for slot in table.slots:
        slot_type = "attention" if slot.id.endswith(".attn") else "mlp"
        ids = [c.id for c in slot.candidates]
        assert len(ids) == len(set(ids))
        assert [c.operator for c in slot.candidates if c.reference] == [teacher_operator(SHAPE, slot_type)]
        assert {"identity", "linear"} <= set(ids)
        assert all(set(c.costs) == {*COST_NAMES, "kv_cache_bytes"} for c in slot.candidates)
        assert all(c.id == spec_name(c.operator) for c in slot.candidates)
    attn = table.slots[0].candidates
    assert {c.id for c in attn} == {"identity", "linear", "attn_h4_kv2_d16", "attn_h2_kv1_d8"}
    assert next(c for c in attn if c.id == "attn_h4_kv2_d16").costs["latency_ms"] == 3.0
    assert table.fixed["latency_ms"] == 1.25
    # the KV cache of the LUT's regime, and how the costs add up: as the estimate adds them
    attention = next(c for c in attn if c.id == "attn_h4_kv2_d16").costs
    # decode: one new token after KEY.length cached ones
    assert attention["kv_cache_bytes"] == attention["kv_bytes_per_token"] * KEY.batch * (KEY.length + 1)
    assert table.peak_costs == ["activation_bytes"]
    assert table.derived_costs == {"memory_bytes": ["weight_bytes", "kv_cache_bytes", "activation_bytes"]}
    body = table.model_dump(mode="json")  # what tooling joins scores into and posts to the search
    assert set(body["slots"][0]["candidates"][0]) == {"id", "costs", "reference", "operator"}


def test_a_sliding_window_caps_the_kv_cache_in_estimates_and_exports(lut):
    # Mistral keeps (and attends to) at most its window: 32 of the 101 positions this regime caches
    mistral = SHAPE.model_copy(update={"family": "mistral", "sliding_window": 32})
    windowed = lut.model_copy(update={"shape": mistral, "shape_hash": shape_hash(mistral)})
    assert windowed.shape_hash != lut.shape_hash
    plain, capped = (
        estimate(lut, Architecture.teacher(SHAPE)),
        estimate(windowed, Architecture.teacher(SHAPE)),
    )
    assert capped.kv_bytes_per_token == plain.kv_bytes_per_token
    assert capped.kv_cache_bytes == plain.kv_bytes_per_token * 2 * 32
    attention = cost_table(windowed).slots[0].candidates[0].costs
    assert attention["kv_cache_bytes"] == attention["kv_bytes_per_token"] * 2 * 32


def test_a_cost_tables_arithmetic_is_the_estimate_and_merged_tables_keep_each_regime(lut):
    arch = Architecture.teacher(SHAPE).replace("block0.mlp", IdentityOp())
    arch = arch.replace("block1.attn", AttentionOp(num_heads=2, num_kv_heads=1, head_dim=8))
    est, table = estimate(lut, arch), cost_table(lut)
    costs = architecture_costs(table, arch)
    for name in (
        "latency_ms",
        "params",
        "weight_bytes",
        "kv_cache_bytes",
        "activation_bytes",
        "memory_bytes",
    ):
        assert costs[name] == pytest.approx(getattr(est, name), rel=1e-12), name
    # a second regime (a prefill LUT of the same shape) under its own names, in one table
    prefill = lut.model_copy(update={"regime": "prefill", "length": 16, "id": 8})
    both = merged({"": table, "ttft": cost_table(prefill)})
    joined = architecture_costs(both, arch)
    assert joined["latency_ms"] == costs["latency_ms"] and joined["memory_bytes"] == costs["memory_bytes"]
    assert joined["ttft.kv_cache_bytes"] == estimate(prefill, arch).kv_cache_bytes != costs["kv_cache_bytes"]
    assert joined["ttft.memory_bytes"] == pytest.approx(estimate(prefill, arch).memory_bytes)
    assert "ttft.activation_bytes" in both.peak_costs and both.derived_costs["ttft.memory_bytes"] == [
        "ttft.weight_bytes",
        "ttft.kv_cache_bytes",
        "ttft.activation_bytes",
    ]
