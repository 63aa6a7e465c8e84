"""Answers from a LUT: an architecture's predicted costs, and the cost table a search request takes."""

import math

from services.profiler.costs import tokens
from shared.costs import cached_tokens, parameters
from shared.schemas.lut import CostCandidate, Costs, CostSlot, CostTable, Estimate, Lut, LutEntry, SlotCost
from shared.schemas.operators import Architecture, fits, is_teacher, spec_hash


class NotMeasured(LookupError):
    """An operator the LUT does not hold."""


def entry_for(lut: Lut, spec) -> LutEntry:
    wanted = spec_hash(spec)
    for entry in lut.entries:
        if entry.hash == wanted:
            return entry
    raise NotMeasured(f"operator {spec.model_dump_json()} is not in LUT {lut.id}")


def estimate(lut: Lut, architecture: Architecture) -> Estimate:
    """fixed + the sum over slots; activations peak at the largest single part (parts run one at a time).

    Raises ValueError for an architecture of the wrong depth and NotMeasured for a missing operator.
    """
    architecture.check_shape(lut.shape)
    slots = []
    for slot, _, spec in architecture.slots():
        try:
            entry = entry_for(lut, spec)
        except NotMeasured as exc:
            raise NotMeasured(f"{slot}: {exc}") from None
        slots.append(SlotCost(slot=slot, operator=spec, name=entry.name, costs=entry.costs))
    parts = [lut.fixed.costs] + [s.costs for s in slots]
    kv_per_token = sum(p.kv_bytes_per_token for p in parts)
    new, cached = tokens(lut.key())
    kv_cache = kv_per_token * lut.batch * cached_tokens(lut.shape, new + cached)
    weights = sum(p.weight_bytes for p in parts)
    activations = max(p.activation_bytes for p in parts)
    return Estimate(
        lut_id=lut.id,
        device_id=lut.device_id,
        latency_ms=math.fsum(p.latency_ms for p in parts),  # correctly rounded, as the search sums it
        params=parameters(architecture, lut.shape),  # the sum of the parts' params, by construction
        weight_bytes=weights,
        kv_bytes_per_token=kv_per_token,
        kv_cache_bytes=kv_cache,
        activation_bytes=activations,
        memory_bytes=weights + kv_cache + activations,
        fixed=lut.fixed.costs,
        slots=slots,
    )


PEAK_COSTS = ["activation_bytes"]  # the parts run one after another: the largest intermediates count
DERIVED_COSTS = {"memory_bytes": ["weight_bytes", "kv_cache_bytes", "activation_bytes"]}


def search_costs(costs: Costs, lut: Lut) -> dict[str, int | float]:
    """A part's costs as the search adds them up: the KV cache for the LUT's regime added."""
    new, cached = tokens(lut.key())
    return {
        **costs.model_dump(),
        "kv_cache_bytes": costs.kv_bytes_per_token * lut.batch * cached_tokens(lut.shape, new + cached),
    }


def cost_table(lut: Lut) -> CostTable:
    """Every slot of the shape with every LUT operator that fits it; the teacher's is the reference."""
    slots = [
        CostSlot(
            id=slot,
            candidates=[
                CostCandidate(
                    id=entry.name,
                    costs=search_costs(entry.costs, lut),
                    reference=is_teacher(entry.operator, lut.shape, slot_type),
                    operator=entry.operator,
                )
                for entry in lut.entries
                if fits(entry.operator, slot_type)
            ],
        )
        for slot, slot_type, _ in Architecture.teacher(lut.shape).slots()
    ]
    return CostTable(
        lut_id=lut.id,
        device_id=lut.device_id,
        fixed=search_costs(lut.fixed.costs, lut),
        peak_costs=PEAK_COSTS,
        derived_costs=DERIVED_COSTS,
        slots=slots,
    )
