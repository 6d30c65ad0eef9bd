"""The one percentile of the load test and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

Number = TypeVar("Number", int, float)


def percentile(values: Sequence[Number], q: float) -> Number | float:
    """Nearest-rank percentile, `q` in 0..100: the smallest value with at least q% of the
    values at or below it (one of the values, never an interpolation); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]
