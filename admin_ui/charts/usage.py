"""The usage charts of the usage page, a key's page and a model's view: what to draw from a series.

Three charts over the same buckets: requests with the errors inside them, tokens with the prompt
part inside the total, and the p50/p95 latency of the successful requests. Hourly buckets cover at
most the last :data:`MOST_HOURS` of the chosen days, daily ones the last :data:`MOST_DAYS`; a
caption says when the range was cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from admin_ui.charts.figure import Chart, Series, time_chart
from proxy.storage.errors import ValidationError
from proxy.storage.usage_report import UsageFilter
from proxy.storage.usage_series import HOURS, Bucket, SeriesPoint, SeriesQuery, UsageSeries

MOST_HOURS = 7 * 24
MOST_DAYS = 400
BUCKETS: dict[str, Bucket] = {"hour": "hour", "day": "day"}


def bucket_of(query: Any, default: Bucket = "day") -> Bucket:
    """The ``?bucket=`` parameter: ``hour`` or ``day``; anything else is a 400 naming it."""
    raw = str(query.get("bucket") or default)
    if raw not in BUCKETS:
        raise ValidationError("must be hour or day", field="bucket")
    return BUCKETS[raw]


@dataclass(frozen=True)
class UsageCharts:
    """The charts of one filter and bucket size, and what the page says about them."""

    bucket: Bucket
    charts: list[Chart]
    cut: bool  # the range was longer than the bucket size draws: only its end is shown
    points: list[SeriesPoint]


async def usage_charts(series: UsageSeries, flt: UsageFilter, bucket: Bucket, prefix: str = "chart") -> UsageCharts:
    """Read the series of ``flt`` in ``bucket``s (rollups only) and lay out its three charts."""
    most = MOST_HOURS if bucket == "hour" else MOST_DAYS
    query = SeriesQuery.of(flt, bucket, most=most)
    points = await series.series(query)
    whole = SeriesQuery.of(flt, bucket)
    return UsageCharts(bucket, draw(points, bucket, prefix), whole.first < query.first, points)


def draw(points: list[SeriesPoint], bucket: Bucket, prefix: str = "chart") -> list[Chart]:
    """The three charts of ``points``."""
    hours, per = HOURS[bucket], f"per {bucket}"
    starts = [p.start for p in points]
    return [
        time_chart(
            f"{prefix}-requests",
            f"Requests {per}",
            starts,
            hours,
            [
                Series("requests", "s-requests", [p.requests for p in points]),
                Series("errors", "s-errors", [p.errors for p in points]),
            ],
        ),
        time_chart(
            f"{prefix}-tokens",
            f"Tokens {per}",
            starts,
            hours,
            [
                Series("total", "s-tokens", [p.total_tokens for p in points]),
                Series("prompt", "s-prompt", [p.prompt_tokens for p in points]),
            ],
        ),
        time_chart(
            f"{prefix}-latency",
            f"Latency {per} (successful requests)",
            starts,
            hours,
            [
                Series("p50", "s-p50", [p.p50_ms for p in points], kind="line", unit="ms"),
                Series("p95", "s-p95", [p.p95_ms for p in points], kind="line", unit="ms"),
            ],
        ),
    ]
