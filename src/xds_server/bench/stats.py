"""Median and p99 of repeated trials (nearest-rank p99: with few trials it is the max)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# A scenario's figures, by name: a number, or numbers by size ("1000": ...), as written to JSON.
Figures = dict[str, float | dict[str, float]]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan


def p99(samples: Sequence[float]) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def ms(seconds: Sequence[float]) -> tuple[float, float]:
    """(median, p99) of samples in seconds, in milliseconds."""
    return median(seconds) * 1000, p99(seconds) * 1000
