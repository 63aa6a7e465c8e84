"""Realistic synthetic search instances, shared by the tests and benchmarks/search.py.

Per slot (attention and MLP alternate): the teacher costs the most and scores 0 and is the reference;
identity is nearly free and scores worst; the other candidates' scores fall with their cost, times
log-normal noise, and their params follow their latency loosely. Slots differ in sensitivity.
"""

import numpy as np

from shared.schemas.search import Budget, Candidate, Slot

HIDDEN = 2048


def synthetic_slots(num_slots: int, num_candidates: int, seed: int = 0) -> list[Slot]:
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
        for j in range(num_candidates - 2):
            fraction = rng.uniform(0.05, 0.95)
            params_fraction = float(np.clip(fraction + rng.normal(0, 0.15), 0.02, 1.0))
            score = min(sensitivity * (1 - fraction) ** 1.5 * np.exp(rng.normal(0, 0.3)), 0.99 * worst)
            costs = {
                "latency_ms": fraction * latency * rng.uniform(0.95, 1.05),
                "params": round(params_fraction * params),
            }
            candidates.append(Candidate(id=f"op{j}", score=score, costs=costs))
        slots.append(Slot(id=f"block{i // 2}.{'mlp' if mlp else 'attn'}", candidates=candidates))
    return slots


def synthetic_budgets(latency: float = 0.5, params: float = 0.6) -> list[Budget]:
    return [Budget(cost="latency_ms", fraction=latency), Budget(cost="params", fraction=params)]
