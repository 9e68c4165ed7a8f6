"""Issue 19, charts that can be read: the hourly rollup (with latency histograms) and the series read
from it, on a real SQLite file; the backfill of the migration and the live writer agree."""

from __future__ import annotations

import random
import sqlite3
import statistics
from datetime import datetime, timezone

import pytest

from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.latency import BOUNDS, BUCKETS, bucket_of, percentile
from proxy.storage.migrate import MIGRATIONS_DIR
from proxy.storage.usage import UsageEvent, record_usage
from proxy.storage.usage_report import UsageFilter, usage_report
from proxy.storage.usage_series import SeriesQuery, UsageSeries, usage_series

NOV2 = datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()
HOUR = 3600.0


def event(i: int, at: float, key: int | None, model: str = "m-a", status: int = 200, latency: float | None = 100.0):
    return UsageEvent(f"r{i}", key, model, "chat.completions", 10, 5, status, latency_ms=latency, created_at=at)


def test_buckets_cover_every_latency_and_percentiles_land_in_the_right_bucket() -> None:
    assert [bucket_of(x) for x in (0, 3.9, 4.0, 100, 262143, 262144, 1e12)] == [0, 0, 1, 10, 32, 33, 33]
    assert percentile([0] * BUCKETS, 0.5) is None
    rng = random.Random(19)
    samples = [rng.lognormvariate(5.5, 0.8) for _ in range(5000)]
    counts = [0] * BUCKETS
    for s in samples:
        counts[bucket_of(s)] += 1
    for q in (0.5, 0.95):
        exact = statistics.quantiles(samples, n=100)[round(q * 100) - 1]
        estimate = percentile(counts, q)
        assert estimate is not None and abs(estimate - exact) / exact < 0.2, (q, exact, estimate)
    top = [0] * BUCKETS
    top[-1] = 3
    assert percentile(top, 0.95) == BOUNDS[-1]  # beyond the last bound: the bound


@pytest.mark.asyncio
async def test_hourly_and_daily_series_from_the_rollup(db: Database, repo: KeyRepository) -> None:
    """issue 19: hourly and daily buckets, requests/tokens/errors, p50/p95; per key and per model;
    quiet buckets as zeros in their place."""
    _, alpha = await repo.create_key("alpha")
    _, beta = await repo.create_key("beta")
    rows = [
        event(1, NOV2 + 1 * HOUR + 5, alpha.id, latency=100.0),
        event(2, NOV2 + 1 * HOUR + 9, alpha.id, latency=400.0),
        event(3, NOV2 + 1 * HOUR + 60, beta.id, "m-b", status=429, latency=1.0),  # an error: no latency
        event(4, NOV2 + 3 * HOUR, beta.id, "m-b", latency=None),
        event(5, NOV2 + 26 * HOUR, None, latency=2000.0),  # no key, next day
    ]
    for row in rows:
        await record_usage(db, row)
    two_days = UsageFilter("2026-11-02", "2026-11-03")
    hourly = await usage_series(db, SeriesQuery.of(two_days, "hour"))
    assert len(hourly) == 48 and hourly[0].start == NOV2 and hourly[47].start == NOV2 + 47 * HOUR
    assert [(p.requests, p.errors) for p in hourly[:4]] == [(0, 0), (3, 1), (0, 0), (1, 0)]
    assert hourly[1].total_tokens == 45 and hourly[1].prompt_tokens == 30
    assert hourly[1].p50_ms is not None and 90.5 <= hourly[1].p50_ms <= 128  # of 100 and 400 ms only
    assert hourly[1].p95_ms is not None and 362 <= hourly[1].p95_ms <= 512
    assert hourly[3].p50_ms is None  # a request without a latency counts, but not in the percentiles
    daily = await usage_series(db, SeriesQuery.of(two_days, "day"))
    assert [(p.requests, p.errors) for p in daily] == [(4, 1), (1, 0)]
    assert daily[1].p50_ms is not None and 1448.2 <= daily[1].p50_ms <= 2048
    keyed = await usage_series(db, SeriesQuery.of(UsageFilter("2026-11-02", "2026-11-03", api_key_id=beta.id), "day"))
    assert [p.requests for p in keyed] == [2, 0]
    model = await usage_series(db, SeriesQuery.of(UsageFilter("2026-11-02", "2026-11-03", model="m-a"), "hour"))
    assert sum(p.requests for p in model) == 3 and model[26].requests == 1
    both = UsageFilter("2026-11-02", "2026-11-03", api_key_id=alpha.id, model="m-b")
    assert sum(p.requests for p in await usage_series(db, SeriesQuery.of(both, "day"))) == 0
    last_day = SeriesQuery.of(UsageFilter("2026-11-01", "2026-11-03"), "hour", most=24)
    assert last_day.last - last_day.first == 23 and last_day.first * HOUR == NOV2 + 24 * HOUR


@pytest.mark.asyncio
async def test_the_migration_backfill_counts_like_the_live_writer(db: Database, repo: KeyRepository) -> None:
    """The history rolled up by the migration equals what each ledger write adds (same buckets)."""
    _, key = await repo.create_key("k")
    rng = random.Random(7)
    for i in range(300):
        status = rng.choice([200, 200, 200, 429, 500])
        latency = rng.choice([None, 0.5, 3.99, 4.0, 5.7, 5.69, 262144.0, 1e7, rng.uniform(1, 100_000)])
        await record_usage(
            db, event(i, NOV2 + rng.uniform(0, 50 * HOUR), rng.choice([key.id, None]), status=status, latency=latency)
        )
    live = await db.execute_read(rollups)
    backfill = (MIGRATIONS_DIR / "20250110040000_usage_hourly.sql").read_text().split("-- backfill:", 1)[1]
    conn = sqlite3.connect(db.path)
    conn.executescript(f"BEGIN; DELETE FROM usage_hourly; DELETE FROM usage_hourly_key; {backfill} COMMIT;")
    conn.close()
    assert await db.execute_read(rollups) == live
    assert sum(r[2] for r in live[0]) == sum(r[3] for r in live[1]) == 300


def rollups(conn: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
    tables = ("usage_hourly ORDER BY hour, model", "usage_hourly_key ORDER BY api_key_id, hour, model")
    return [[tuple(r) for r in conn.execute(f"SELECT * FROM {t}")] for t in tables]


@pytest.mark.asyncio
async def test_closed_buckets_are_kept_and_the_open_one_is_read_each_time(db: Database) -> None:
    now = NOV2 + 30 * HOUR + 1800  # 06:30 on Nov 3
    series = UsageSeries(db)
    query = SeriesQuery.of(UsageFilter("2026-11-02", "2026-11-03"), "hour")
    await record_usage(db, event(1, NOV2 + 2 * HOUR, None))
    first = await series.series(query, now=now)
    await record_usage(db, event(2, NOV2 + 30 * HOUR + 60, None))  # the open hour
    second = await series.series(query, now=now)
    assert second == await usage_series(db, query)
    assert [p.requests for p in first] != [p.requests for p in second]
    scanned: list[str] = []
    db_read = db.execute_read

    async def counting(fn):  # type: ignore[no-untyped-def]
        scanned.append("read")
        return await db_read(fn)

    db.execute_read = counting  # type: ignore[method-assign]
    await series.series(query, now=now)
    assert len(scanned) == 1  # the open hours only: the closed ones came from memory


@pytest.mark.asyncio
async def test_a_distant_range_replaces_the_kept_run_instead_of_spanning_the_gap(db: Database) -> None:
    now = NOV2 + 30 * HOUR
    series = UsageSeries(db)
    await record_usage(db, event(1, NOV2 + 2 * HOUR, None))
    await record_usage(db, event(2, NOV2 - 400 * 24 * HOUR, None))  # more than a year before
    recent = SeriesQuery.of(UsageFilter("2026-11-01", "2026-11-02"), "day")
    old = SeriesQuery.of(UsageFilter("2025-09-01", "2025-09-30"), "day")
    assert [p.requests for p in await series.series(recent, now=now)] == [0, 1]
    assert sum(p.requests for p in await series.series(old, now=now)) == 1
    ((low, high, _),) = series._runs.values()
    assert (low, high) == (old.first, old.last)  # the year between was never read nor kept
    assert [p.requests for p in await series.series(recent, now=now)] == [0, 1]


@pytest.mark.asyncio
async def test_the_report_counts_each_keys_endpoints_most_used_first(db: Database, repo: KeyRepository) -> None:
    """The per-key endpoint counts, now summed in one pass over the rollup cells (not one pass per key)."""
    _, alpha = await repo.create_key("alpha")
    _, beta = await repo.create_key("beta")
    for i, (key, endpoint) in enumerate(
        [(alpha, "completions"), (alpha, "embeddings"), (alpha, "embeddings"), (beta, "completions")]
    ):
        await record_usage(db, UsageEvent(f"e{i}", key.id, "m", endpoint, 1, 1, 200, created_at=NOV2 + i))
    report = await usage_report(db, UsageFilter("2026-11-02", "2026-11-02"))
    endpoints = {row["key_name"]: row["endpoints"] for row in report.by_key}
    assert endpoints == {"alpha": {"embeddings": 2, "completions": 1}, "beta": {"completions": 1}}
    assert list(endpoints["alpha"]) == ["embeddings", "completions"]
