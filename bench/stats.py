"""Medians, percentiles and spread of repeated measurements."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """What the table and the JSON file say about a list of samples."""

    n: int
    median: float
    p99: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        """The summary as JSON-ready numbers."""
        return {
            "n": self.n,
            "median": self.median,
            "p99": self.p99,
            "min": self.low,
            "max": self.high,
        }


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile (0..1) with linear interpolation between ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = fraction * (len(ordered) - 1)
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


def summarize(samples: Sequence[float]) -> Summary:
    """Median, p99 and range of ``samples``."""
    if not samples:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    return Summary(
        n=len(samples),
        median=percentile(samples, 0.5),
        p99=percentile(samples, 0.99),
        low=min(samples),
        high=max(samples),
    )
