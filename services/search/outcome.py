"""What a search returns: the solutions found, in order, and why it stopped."""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Found:
    choice: np.ndarray  # candidate index per slot
    objective: float
    bound: float  # proven lower bound on this solution's problem (given the solutions before it)
    optimal: bool  # proven within the requested gap


@dataclass
class Outcome:
    status: Literal["complete", "exhausted", "time_limit", "cancelled"]
    found: list[Found] = field(default_factory=list)


def relative_gap(objective: float, bound: float) -> float:
    if objective <= 0:
        return 0.0 if bound >= objective else float("inf")
    return max(0.0, (objective - bound) / objective)


def within_gap(objective: float, bound: float, gap: float) -> bool:
    """Proven within `gap`; a 1e-9 floor absorbs float rounding so that gap 0 means exact."""
    return objective - bound <= gap * abs(objective) + 1e-9 * max(1.0, abs(objective))
