"""Latency histograms: the buckets the hourly rollup counts requests in, and percentiles from them.

Percentiles do not add up (the p95 of two hours is not a sum of theirs), so the rollups keep a
histogram: for each (hour, key, model) the number of successful requests whose latency fell in each
of :data:`BUCKETS` buckets. The bounds grow by a factor of √2 from 4 ms to 262 s (a bucket is at most
41 % wide, on every scale from a cached 1-token answer to a long generation), plus one bucket below
and one above; histograms of any hours, keys and models add up column by column, and
:func:`percentile` reads a percentile back, interpolated inside its bucket (geometrically: the
bounds are geometric). The estimate is within its bucket, so within about 20 % of the exact value:
a chart's precision, as with Prometheus histograms. Only successes (status below 400) are counted:
a refusal answered in a millisecond is not the latency users wait for.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

BOUNDS: tuple[float, ...] = tuple(round(2 ** (k / 2 + 2), 1) for k in range(33))  # 4.0 … 262144.0 ms
BUCKETS = len(BOUNDS) + 1  # bucket k holds [BOUNDS[k - 1], BOUNDS[k]); bucket 0 below 4 ms; the last one above
COLUMNS: tuple[str, ...] = tuple(f"lat{k:02d}" for k in range(BUCKETS))


def bucket_of(latency_ms: float) -> int:
    """The histogram bucket of one latency."""
    return bisect.bisect_right(BOUNDS, latency_ms)


def bucket_case(expr: str) -> str:
    """``bucket_of`` as an SQL ``CASE`` on ``expr`` (for a migration's backfill of stored rows)."""
    arms = " ".join(f"WHEN {expr} < {bound!r} THEN {k}" for k, bound in enumerate(BOUNDS))
    return f"CASE {arms} ELSE {len(BOUNDS)} END"


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The ``q``-quantile (0 < q < 1) of a histogram with :data:`BUCKETS` counts; None when it is empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for k, n in enumerate(counts):
        if n and seen + n >= rank:
            return _inside(k, (rank - seen) / n)
        seen += n
    return BOUNDS[-1]  # not reached: the counts add up to total


def _inside(k: int, fraction: float) -> float:
    """The point ``fraction`` of the way through bucket ``k`` (linear in the first, geometric after)."""
    if k == 0:
        return round(BOUNDS[0] * fraction, 1)
    if k >= len(BOUNDS):
        return BOUNDS[-1]  # above the top bound: reported as the bound, an understatement said in the chart
    low, high = BOUNDS[k - 1], BOUNDS[k]
    return round(low * (high / low) ** fraction, 1)
