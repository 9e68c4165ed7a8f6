"""The usage charts of the usage page, a key's page and a model's view: what to draw from a series.

Three charts over the same buckets: requests with the errors inside them, tokens with the prompt
part inside the total, and the p50/p95 latency of the successful requests. Hourly buckets cover at
most the last :data:`MOST_HOURS` hours of the chosen days (72 bars still read on a phone), daily
ones the last :data:`MOST_DAYS` days; the page says when the range was cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from admin_ui.charts.figure import Chart, Series, time_chart
from admin_ui.charts.svg import svg
from proxy.storage.errors import ValidationError
from proxy.storage.usage_report import UsageFilter
from proxy.storage.usage_series import HOURS, Bucket, SeriesPoint, SeriesQuery, UsageSeries

MOST_HOURS = 72
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

    @property
    def shown(self) -> str:
        """What a cut range shows: its last 72 hours or 400 days."""
        return f"{MOST_HOURS} hours" if self.bucket == "hour" else f"{MOST_DAYS} days"

    @property
    def figures(self) -> list[tuple[Chart, Markup]]:
        """Each chart with its SVG (``templates/_chart.html`` puts them in a captioned figure)."""
        return [(chart, svg(chart)) for chart in self.charts]


async def usage_charts(series: UsageSeries, flt: UsageFilter, bucket: Bucket, prefix: str = "chart") -> UsageCharts:
    """Read the series of ``flt`` in ``bucket``s (rollups only) and lay out its three charts."""
    points, cut = await read_series(series, flt, bucket)
    return UsageCharts(bucket, draw(points, bucket, prefix), cut, points)


async def read_series(series: UsageSeries, flt: UsageFilter, bucket: Bucket) -> tuple[list[SeriesPoint], bool]:
    """The points a chart of ``flt`` draws (the range's end when it is too long), and whether it was cut."""
    query = SeriesQuery.of(flt, bucket, most=MOST_HOURS if bucket == "hour" else MOST_DAYS)
    return await series.series(query), SeriesQuery.of(flt, bucket).first < query.first


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
