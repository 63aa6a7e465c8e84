"""Rank statistics for comparing orders: Spearman's correlation, with ties given their mean rank."""

import numpy as np


def ranks(values) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    values = np.asarray(values, dtype=float)
    order = np.argsort(values, kind="stable")
    ranked = np.empty(len(values))
    ranked[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(a, b) -> float | None:
    """Spearman's rank correlation of two paired sequences; None when either is constant or too short."""
    if len(a) != len(b):
        raise ValueError("spearman needs paired sequences of one length")
    if len(a) < 2:
        return None
    x, y = ranks(a), ranks(b)
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
