"""Realistic synthetic search instances, shared by the tests and benchmarks/search.py.

Per slot (attention and MLP alternate): the teacher costs the most and scores 0 and is the reference;
identity is nearly free and scores worst; the other candidates' scores fall with their cost, times
log-normal noise, and their params follow their latency loosely. Slots differ in sensitivity.

With `memory`, candidates also have weight_bytes (bf16 params), kv_cache_bytes (attention only) and
activation_bytes, the last two on a few sizes per slot type as a LUT's operators have (so a few peak
levels); `synthetic_fixed` is the model's part outside the slots, and `synthetic_memory` the whole-model
memory budget of the profiler's estimate (activation_bytes a peak cost). The draws are the same with
or without `memory`.
"""

import math

import numpy as np

from shared.schemas.operators import slot_id
from shared.schemas.search import Budget, Candidate, Slot

HIDDEN = 2048
TOKENS = 2048  # cached tokens of one sequence
MIB = 2**20


def _memory(params: float, fraction: float, mlp: bool) -> dict[str, float]:
    """A candidate's memory costs: a fraction of its slot teacher's, rounded up to eighths."""
    eighths = math.ceil(fraction * 8) / 8
    kv = 0 if mlp else round(eighths * 2 * HIDDEN * TOKENS * 2)  # keys and values, bf16
    return {
        "weight_bytes": 2 * params,
        "kv_cache_bytes": kv,
        "activation_bytes": eighths * (96 if mlp else 64) * MIB,
    }


def synthetic_slots(num_slots: int, num_candidates: int, seed: int = 0, memory: bool = False) -> list[Slot]:
    rng = np.random.default_rng(seed)
    slots = []
    for i in range(num_slots):
        mlp = i % 2 == 1
        latency = (2.0 if mlp else 1.2) * rng.uniform(0.9, 1.1)
        params = (8 if mlp else 4) * HIDDEN * HIDDEN
        sensitivity = rng.lognormal(np.log(0.02), 1.0)
        worst = sensitivity * rng.uniform(1.0, 1.3)
        candidates = [
            Candidate(
                id="teacher", score=0.0, costs={"latency_ms": latency, "params": params}, reference=True
            ),
            Candidate(
                id="identity", score=worst, costs={"latency_ms": 0.01 * rng.uniform(0.5, 1.5), "params": 0}
            ),
        ]
        if memory:
            candidates[0].costs |= _memory(params, 1.0, mlp)
            candidates[1].costs |= _memory(0, 0.0, mlp)
        for j in range(num_candidates - 2):
            fraction = rng.uniform(0.05, 0.95)
            params_fraction = float(np.clip(fraction + rng.normal(0, 0.15), 0.02, 1.0))
            score = min(sensitivity * (1 - fraction) ** 1.5 * np.exp(rng.normal(0, 0.3)), 0.99 * worst)
            costs = {
                "latency_ms": fraction * latency * rng.uniform(0.95, 1.05),
                "params": round(params_fraction * params),
            }
            if memory:
                costs |= _memory(costs["params"], fraction, mlp)
            candidates.append(Candidate(id=f"op{j}", score=score, costs=costs))
        slots.append(Slot(id=slot_id(i // 2, "mlp" if mlp else "attention"), candidates=candidates))
    return slots


def synthetic_budgets(latency: float = 0.5, params: float = 0.6) -> list[Budget]:
    return [Budget(cost="latency_ms", fraction=latency), Budget(cost="params", fraction=params)]


def synthetic_fixed(num_slots: int) -> dict[str, float]:
    """Embedding, LM head and norms: vocabulary 32000, tied; logits of one token at a time."""
    params = 32000 * HIDDEN
    return {
        "latency_ms": 0.02 * num_slots,
        "params": params,
        "weight_bytes": 2 * params,
        "kv_cache_bytes": 0,
        "activation_bytes": 48 * MIB,
    }


MEMORY = {"memory_bytes": ["weight_bytes", "kv_cache_bytes", "activation_bytes"]}


def synthetic_memory(fraction: float = 0.6) -> dict:
    """The request fields of a whole-model memory budget (peak activations) beside synthetic_budgets."""
    return {
        "peak_costs": ["activation_bytes"],
        "derived_costs": MEMORY,
        "budgets": [Budget(cost="memory_bytes", fraction=fraction)],
    }
