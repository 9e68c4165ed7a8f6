"""The usage charts draw every day of the range, quiet days as zeros."""

from __future__ import annotations

from admin_ui.views.usage import MAX_CHART_DAYS, bars, every_day


def test_quiet_days_are_zero_bars_in_their_place() -> None:
    rows = [
        {"day": "2026-11-02", "total_tokens": 50, "requests": 2},
        {"day": "2026-11-05", "total_tokens": 10, "requests": 1},
    ]
    days = every_day(rows, "2026-11-01", "2026-11-06")
    assert [d["day"] for d in days] == [f"2026-11-0{i}" for i in range(1, 7)]
    assert [d["requests"] for d in days] == [0, 2, 0, 0, 1, 0]
    chart = bars(days, "day", "requests")
    assert [b["h"] for b in chart["bars"]] == [0.0, 120.0, 0.0, 0.0, 60.0, 0.0]
    assert chart["bars"][4]["x"] == 400.0  # the 5th of 6 slots, not beside the 2nd


def test_a_range_too_long_to_draw_day_by_day_keeps_its_busy_days_only() -> None:
    rows = [{"day": "2020-01-01", "total_tokens": 1, "requests": 1}]
    assert every_day(rows, "2020-01-01", "2023-01-01") == rows
    assert len(every_day(rows, "2020-01-01", "2020-12-31")) == 366 < MAX_CHART_DAYS
