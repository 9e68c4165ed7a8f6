"""Issue 19, the dashboard's figures (``proxy.storage.traffic``): percentiles, success rate and decode
rate at their edges (no rows, one row, all errors), and the last hour read from a real SQLite ledger
through its time index."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.storage.database import Database
from proxy.storage.migrate import apply_migrations
from proxy.storage.traffic import (
    HOUR,
    ModelTraffic,
    Timing,
    Traffic,
    days,
    decode_rate,
    last_hour,
    percentile,
    success_rate,
    summarize,
    utc_days,
)
from proxy.storage.usage import UsageEvent, record_usage


def test_no_rows_have_no_rate_and_no_percentile() -> None:
    """issue 19: an empty hour shows dashes, not a 0 % success rate or a 0 ms latency."""
    assert percentile([], 0.5) is None and percentile([], 0.95) is None
    assert success_rate(0, 0) is None
    assert decode_rate([]) is None
    empty = summarize(0.0, [], [])
    assert (empty.requests, empty.errors, empty.success_rate, empty.tokens_per_second) == (0, 0, None, None)
    assert empty.latency_p50_ms is None and empty.ttft_p95_ms is None and empty.by_model == ()


def test_one_row_is_its_own_percentile() -> None:
    """issue 19: with one request, p50 and p95 are that request's times."""
    assert percentile([42.0], 0.5) == percentile([42.0], 0.95) == 42.0
    one = summarize(0.0, [ModelTraffic("m", 1, 5, 11, 0)], [Timing(1100.0, 100.0, 11)])
    assert (one.latency_p50_ms, one.latency_p95_ms, one.ttft_p50_ms, one.ttft_p95_ms) == (1100.0, 1100.0, 100.0, 100.0)
    assert one.success_rate == 1.0
    assert one.tokens_per_second == pytest.approx(10.0)  # 10 tokens after the first, in one second


def test_all_errors_is_zero_success_and_no_times() -> None:
    """issue 19: an hour of failures is 0 % success; the times of successes are absent, not zero."""
    failed = summarize(0.0, [ModelTraffic("a", 3, 30, 0, 3), ModelTraffic("b", 2, 20, 0, 2)], [])
    assert failed.success_rate == 0.0 and failed.errors == failed.requests == 5
    assert failed.latency_p50_ms is None and failed.tokens_per_second is None
    assert [m.model for m in failed.by_model] == ["a", "b"]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.5) == 10.0  # the 10th of 20, never 10.5
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 1.0) == 20.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    with pytest.raises(ValueError):
        percentile(values, 0.0)


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=300), st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_percentiles_match_numpys_inverted_cdf(values: list[float], q: float) -> None:
    """The nearest-rank method is numpy's ``inverted_cdf``: an independent implementation agrees."""
    assert percentile(values, q) == float(numpy.percentile(values, q * 100, method="inverted_cdf"))


def test_decode_rate_skips_what_has_no_decode_time() -> None:
    """Single-token answers, rows without a TTFT and zero-length decodes do not divide by zero."""
    assert decode_rate([Timing(500.0, 100.0, 1), Timing(None, None, 9), Timing(300.0, None, 9)]) is None
    assert decode_rate([Timing(100.0, 100.0, 5)]) is None
    rows = [Timing(2100.0, 100.0, 21), Timing(600.0, 100.0, 6), Timing(50.0, 10.0, 1)]
    assert decode_rate(rows) == pytest.approx((20 + 5) / (2.0 + 0.5))  # weighted by decode time


def _write(path: Path, events: list[UsageEvent]) -> None:
    async def go() -> None:
        async with Database.open(path) as db:
            for e in events:
                await record_usage(db, e)

    asyncio.run(go())


def _event(i: int, at: float, **kw: object) -> UsageEvent:
    base: dict[str, object] = {
        "request_id": f"r{i}",
        "api_key_id": None,
        "model": "m-a",
        "endpoint": "chat.completions",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "status": 200,
        "latency_ms": 500.0,
        "ttft_ms": 100.0,
        "created_at": at,
    }
    base.update(kw)
    return UsageEvent(**base)  # type: ignore[arg-type]


def test_the_last_hour_reads_only_the_hour_from_a_real_ledger(tmp_path: Path) -> None:
    """issue 19: rows older than an hour do not count; errors count in the models' rows but not the times."""
    now = 1_000_000.0
    db_path = tmp_path / "app.db"
    events = [
        _event(0, now - HOUR - 5, latency_ms=9999.0),  # too old
        _event(1, now - 100, latency_ms=200.0, ttft_ms=50.0, completion_tokens=11),
        _event(2, now - 50, latency_ms=400.0, ttft_ms=60.0, model="m-b"),
        _event(3, now - 10, status=500, latency_ms=1.0, ttft_ms=None, completion_tokens=0, model="m-b"),
        _event(4, now - 5, status=429, latency_ms=1.0, ttft_ms=None, completion_tokens=0),
    ]
    _write(db_path, events)

    async def read() -> Traffic:
        async with Database.open(db_path) as db:
            return await last_hour(db, now=now)

    hour = asyncio.run(read())
    assert hour.requests == 4 and hour.errors == 2 and hour.success_rate == 0.5
    assert (hour.latency_p50_ms, hour.latency_p95_ms) == (200.0, 400.0)
    assert (hour.ttft_p50_ms, hour.ttft_p95_ms, hour.sampled) == (50.0, 60.0, 2)
    assert hour.tokens_per_second == pytest.approx((10 + 4) / (0.15 + 0.34))
    models = {m.model: (m.requests, m.total_tokens, m.errors) for m in hour.by_model}
    assert models == {"m-a": (2, 10 + 11 + 10 + 0, 1), "m-b": (2, 15 + 10, 1)}


def test_whole_days_come_from_the_rollups(tmp_path: Path) -> None:
    """issue 19: today and the last 7 days per model, from the rows' daily rollups (UTC days)."""
    now = 1_000_000_000.0  # 2001-09-09 01:46:40 UTC
    db_path = tmp_path / "app.db"
    _write(
        db_path,
        [
            _event(0, now - 60),
            _event(1, now - 120, status=503, model="m-b", completion_tokens=0),
            _event(2, now - 2 * 3600),  # yesterday (UTC)
            _event(3, now - 8 * 86400),  # before the week
        ],
    )

    async def read() -> tuple[Traffic, Traffic]:
        async with Database.open(db_path) as db:
            return await days(db, *utc_days(1, now)), await days(db, *utc_days(7, now))

    today, week = asyncio.run(read())
    assert (today.requests, today.errors, today.success_rate, today.total_tokens) == (2, 1, 0.5, 25)
    assert [(m.model, m.requests, m.errors) for m in today.by_model] == [("m-a", 1, 0), ("m-b", 1, 1)]
    assert (week.requests, week.errors) == (3, 1)
    assert today.latency_p50_ms is None and today.tokens_per_second is None  # the rollups keep no times


def test_the_hours_queries_use_the_time_index(tmp_path: Path) -> None:
    """On a big ledger the hour must be an index range, never a scan of the model index or the table."""
    from proxy.storage import traffic

    db_path = tmp_path / "app.db"
    apply_migrations(db_path)
    conn = sqlite3.connect(db_path)
    for sql, params in ((traffic._COUNTS, (0.0,)), (traffic._SAMPLE, (0.0, 10))):
        plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "USING INDEX token_usage_events_created_at (created_at>?)" in plan, plan
    plan = " ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {traffic._DAYS}", ("2025-01-01", "2025-01-07")))
    assert "USING PRIMARY KEY (day>? AND day<?)" in plan, plan
    conn.close()


def test_a_busy_hour_samples_the_newest_rows_but_counts_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The times come from at most SAMPLE_LIMIT newest successes (a bounded read); counts stay exact."""
    from proxy.storage import traffic

    monkeypatch.setattr(traffic, "SAMPLE_LIMIT", 3)
    now = 1_000_000.0
    db_path = tmp_path / "app.db"
    _write(db_path, [_event(i, now - 100 + i, latency_ms=100.0 * (i + 1)) for i in range(5)])

    async def read() -> Traffic:
        async with Database.open(db_path) as db:
            return await last_hour(db, now=now)

    hour = asyncio.run(read())
    assert (hour.requests, hour.sampled) == (5, 3)
    assert (hour.latency_p50_ms, hour.latency_p95_ms) == (400.0, 500.0)  # of 300, 400, 500: the newest three
