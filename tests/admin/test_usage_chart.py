"""Issue 19, charts that can be read: the geometry of the server-drawn charts (scales, ticks, columns).

The browser side (axes on screen, the hover title, the hourly/daily switch) is in
``test_usage_chart_browser.py``; the rollup that feeds them in ``tests/test_usage_series.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from admin_ui.charts.figure import HEIGHT, LEFT, RIGHT, TOP, WIDTH, Series, time_chart
from admin_ui.charts.scale import nice_step, short_number, time_label, time_ticks, value_scale
from admin_ui.charts.svg import svg
from admin_ui.charts.usage import draw
from proxy.storage.usage_series import SeriesPoint

DAY = 86400.0
NOV1 = datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()
BOTTOM = HEIGHT - 26


def days(n: int, first: float = NOV1) -> list[float]:
    return [first + i * DAY for i in range(n)]


@pytest.mark.parametrize(
    ("largest", "ticks"),
    [
        (0, (0, 1)),  # no data: an axis all the same
        (1, (0, 1)),
        (7, (0, 2, 4, 6, 8)),
        (12, (0, 5, 10, 15)),  # counts never get 2.5-steps
        (99, (0, 20, 40, 60, 80, 100)),
        (1234, (0, 250, 500, 750, 1000, 1250)),
        (3.3e18, (0, 1e18, 2e18, 3e18, 4e18)),
        (float("inf"), (0, 1)),
    ],
)
def test_value_ticks_are_nice_start_at_zero_and_hold_the_largest(largest: float, ticks: tuple[float, ...]) -> None:
    scale = value_scale(largest)
    assert scale.ticks == ticks
    assert scale.top == ticks[-1] >= (largest if largest < float("inf") else 0)
    assert len(scale.ticks) <= 6


def test_steps_and_labels() -> None:
    assert [nice_step(x) for x in (0.3, 1, 1.1, 2.1, 4, 7, 0.013)] == [0.5, 1, 2, 2.5, 5, 10, 0.02]
    assert value_scale(0.3, integer=False).ticks == (0, 0.1, 0.2, 0.3)
    labels = [short_number(v) for v in (0, 950, 1500, 12_000, 999_960, 3.25e6, 1e18, 1e21)]
    assert labels == ["0", "950", "1.5k", "12k", "1M", "3.25M", "1E", "1e+21"]


def test_time_ticks_fall_on_round_hours_and_days() -> None:
    assert time_ticks(0, 48, 1) == [0, 12, 24, 36]  # every 12 h from midnight
    assert time_ticks(5, 48, 1) == [7, 19, 31, 43]  # a range starting at 05:00: the first at 12:00
    assert time_ticks(0, 168, 1) == [0, 48, 96, 144]  # a week: every other midnight
    assert time_ticks(0, 30, 24) == [0, 5, 10, 15, 20, 25]
    assert time_ticks(3, 1, 24) == [0]  # one bucket still gets its label
    assert time_ticks(0, 0, 24) == []
    assert time_label(NOV1, 24) == "Nov 1"
    assert time_label(NOV1 + 14 * 3600, 1) == "14:00"
    assert time_label(NOV1, 1) == "Nov 1"  # midnight names its day


def test_a_daily_chart_has_axes_columns_in_place_and_titles() -> None:
    """Quiet days are zero columns in their place (not the next busy day moved up), the value axis
    is labelled, the time axis names days, and every column's title has the day and all values."""
    requests = [0, 2, 0, 0, 1, 0]
    errors = [0, 1, 0, 0, 0, 0]
    chart = time_chart("c", "Requests", days(6), 24, [Series("requests", "r", requests), Series("errors", "e", errors)])
    assert not chart.empty
    assert [t.label for t in chart.y_ticks] == ["0", "1", "2"]
    assert chart.y_ticks[0].pos == BOTTOM and chart.y_ticks[-1].pos == TOP
    assert [t.label for t in chart.x_ticks] == [f"Nov {d}" for d in range(1, 7)]
    slot = (WIDTH - RIGHT - LEFT) / 6
    assert [c.x for c in chart.columns] == [round(LEFT + i * slot, 2) for i in range(6)]
    assert [len(c.bars) for c in chart.columns] == [0, 2, 0, 0, 1, 0]
    second = chart.columns[1]
    assert second.bars[0].y == TOP and second.bars[0].y + second.bars[0].h == BOTTOM  # the largest: full height
    assert second.bars[1].h == pytest.approx(second.bars[0].h / 2, abs=0.01)  # errors inside requests
    assert chart.columns[4].bars[0].h == pytest.approx((BOTTOM - TOP) / 2, abs=0.01)
    assert second.title == "2026-11-02 (UTC): requests 2, errors 1"


def test_no_data_draws_the_axes_and_says_so() -> None:
    chart = time_chart("c", "Tokens", days(3), 24, [Series("total", "t", [0, 0, 0])])
    assert chart.empty and [t.label for t in chart.y_ticks] == ["0", "1"]
    assert len(chart.columns) == 3 and not any(c.bars for c in chart.columns)
    nothing = time_chart("c", "Tokens", [], 24, [Series("total", "t", [])])
    assert nothing.empty and nothing.columns == [] and nothing.x_ticks == []


def test_one_point_is_one_full_width_column_and_a_dot() -> None:
    start = NOV1 + 9 * 3600
    chart = time_chart("c", "Latency", [start], 1, [Series("p50", "p", [120.0], kind="line", unit="ms")])
    (column,) = chart.columns
    assert column.x == LEFT and column.w == WIDTH - RIGHT - LEFT
    assert chart.lines[0].segments == [] and len(chart.lines[0].dots) == 1  # a lone point is a dot
    assert column.title == "2026-11-01 09:00-10:00 UTC: p50 120 ms"
    assert [t.label for t in chart.x_ticks] == ["09:00"]


def test_huge_values_keep_short_labels_and_exact_titles() -> None:
    huge = [4.2e15, 1.0e15]
    chart = time_chart("c", "Tokens", days(2), 24, [Series("total", "t", huge)])
    assert [t.label for t in chart.y_ticks] == ["0", "1P", "2P", "3P", "4P", "5P"]
    assert chart.columns[0].title.endswith("total 4,200,000,000,000,000")
    assert all(TOP <= b.y <= BOTTOM for c in chart.columns for b in c.bars)


def test_missing_latency_breaks_the_line_and_says_none() -> None:
    p50: list[float | None] = [100.0, 110.0, None, 90.0, 95.0]
    chart = time_chart("c", "Latency", days(5), 24, [Series("p50", "p", p50, kind="line", unit="ms")])
    assert len(chart.lines[0].segments) == 2 and len(chart.lines[0].dots) == 4
    assert chart.columns[2].title.endswith("p50 none")


def test_the_usage_charts_of_a_series() -> None:
    hist = [0] * 34
    hist[10] = 10  # ten successes between 90.5 and 128 ms
    points = [SeriesPoint(NOV1), SeriesPoint(NOV1 + DAY, 12, 2, 100, 50, tuple(hist))]
    requests, tokens, latency = draw(points, "day")
    assert requests.columns[1].title == "2026-11-02 (UTC): requests 12, errors 2"
    assert tokens.columns[1].title == "2026-11-02 (UTC): total 150, prompt 100"
    assert latency.columns[0].title.endswith("p50 none, p95 none")
    assert "p50 107.6 ms" in latency.columns[1].title


def test_the_svg_has_its_namespace_a_title_per_column_and_escapes_text() -> None:
    chart = time_chart("c", "<b>x</b>", days(3), 24, [Series("<i>n</i>", "r", [1, 2, 3])])
    drawing = str(svg(chart))
    assert drawing.startswith('<svg viewBox="0 0 400 210"') and 'xmlns="http://www.w3.org/2000/svg"' in drawing
    assert drawing.count('<g class="col"><title>') == 3 and drawing.count('class="hit"') == 3
    assert "<b>" not in drawing and "<i>" not in drawing and "&lt;i&gt;n&lt;/i&gt; 3" in drawing
    assert "No requests" not in drawing
    assert "No requests in this period" in str(svg(time_chart("c", "t", days(2), 24, [Series("n", "r", [0, 0])])))
