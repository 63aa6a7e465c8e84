"""Budgets as a user writes them: a fraction of the teacher (0.5), or an amount with its unit."""

import math
import re

from shared.schemas.search import Budget

UNITS = {
    "latency_ms": {"ms": 1.0, "s": 1000.0, "us": 1e-3},
    "memory_bytes": {
        "": 1,
        "b": 1,
        "kb": 1e3,
        "mb": 1e6,
        "gb": 1e9,
        "kib": 2**10,
        "mib": 2**20,
        "gib": 2**30,
    },
    "params": {"": 1, "k": 1e3, "m": 1e6, "b": 1e9},
}
_AMOUNT = re.compile(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z/]*)\s*", re.IGNORECASE)
RATES = {"tok/s": 1000.0}  # a latency as its inverse: 30tok/s is at most 1000/30 ms a token


def parse_budget(cost: str, text: str) -> Budget:
    """A number up to 1 is a fraction of the teacher's whole-model value ('0.5': half); anything else is
    an amount ('30ms', '2GiB', '60M'; params and bytes may go without a unit). ValueError otherwise."""
    found = _AMOUNT.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is neither a fraction of the teacher nor an amount ({_units(cost)})")
    value, unit = float(found.group(1)), found.group(2).lower()
    if value <= 0:
        raise ValueError(f"{text!r}: a budget is above zero")
    if unit == "" and value <= 1:
        return Budget(cost=cost, fraction=value)
    if unit == "" and cost == "latency_ms":
        raise ValueError(
            f"{text!r}: a latency above 1 needs a unit ({_units(cost)}); 0.5 means half the teacher's"
        )
    if cost == "latency_ms" and unit in RATES:
        amount = RATES[unit] / value
    elif unit in UNITS[cost]:
        amount = value * UNITS[cost][unit]
    else:
        raise ValueError(f"{text!r}: unknown unit {unit!r} for {cost} ({_units(cost)})")
    if not 0 < amount < math.inf:  # '1e999', or a unit that takes a number past a float's range
        raise ValueError(f"{text!r}: out of range for {cost}")
    return Budget(cost=cost, max=amount)


def _units(cost: str) -> str:
    rates = list(RATES) if cost == "latency_ms" else []
    return ", ".join([u or "no unit" for u in UNITS[cost]] + rates)
