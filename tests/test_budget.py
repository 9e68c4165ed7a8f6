"""Budget periods, daily rollups and client address allow-lists (issue 9)."""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from proxy.storage.api_keys import KeyRepository
from proxy.storage.budget import period_bounds, zone
from proxy.storage.database import Database
from proxy.storage.migrate import MIGRATIONS_DIR, apply_migrations
from proxy.storage.usage import QuotaExceeded, UsageEvent, record_usage, reserve
from proxy.storage.usage_report import UsageFilter, UsageReports, purge_events, usage_report
from tests.harness import Daemon, Proxy

HELLO = [{"role": "user", "content": "Say hi."}]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_periods_are_calendar_aligned_in_the_configured_zone() -> None:
    now = _ts("2026-03-18T15:30:00+00:00")  # a Wednesday
    assert period_bounds("daily", now) == (_ts("2026-03-18T00:00:00+00:00"), _ts("2026-03-19T00:00:00+00:00"))
    assert period_bounds("weekly", now) == (_ts("2026-03-16T00:00:00+00:00"), _ts("2026-03-23T00:00:00+00:00"))
    assert period_bounds("monthly", now) == (_ts("2026-03-01T00:00:00+00:00"), _ts("2026-04-01T00:00:00+00:00"))
    dec = _ts("2026-12-31T23:00:00+00:00")
    assert period_bounds("monthly", dec)[1] == _ts("2027-01-01T00:00:00+00:00")
    paris = zone("Europe/Paris")  # DST starts 2026-03-29: that day has 23 hours
    start, end = period_bounds("daily", _ts("2026-03-29T12:00:00+00:00"), paris)
    assert (start, end) == (_ts("2026-03-28T23:00:00+00:00"), _ts("2026-03-29T22:00:00+00:00"))


@pytest.mark.asyncio
async def test_twenty_concurrent_requests_across_a_period_boundary(db: Database, repo: KeyRepository) -> None:
    """Issue 9: requests on both sides of midnight never exceed either day's budget; ledger, rollups and
    counters agree exactly."""
    limit = 60
    _, key = await repo.create_key("daily", token_limit=limit, budget_period="daily")
    midnight = _ts("2026-05-02T00:00:00+00:00")
    clock = [midnight - 0.5]  # a clock the test moves across midnight while requests are in flight
    rng = random.Random(9)
    billed: dict[float | None, int] = {}
    refusals: list[QuotaExceeded] = []

    moved, reserved_before = asyncio.Event(), [0]

    async def one(i: int) -> None:
        if i >= 10:  # the second ten arrive after midnight, while the first ten are still in flight
            await moved.wait()
        await asyncio.sleep(rng.random() / 100)
        got = await reserve(db, key.id, 12, minimum=5, now=clock[0])
        if i < 10:
            reserved_before[0] += 1
            if reserved_before[0] == 10:
                clock[0] = midnight + 0.5
                moved.set()
            await moved.wait()
        if isinstance(got, QuotaExceeded):
            refusals.append(got)
            return
        await asyncio.sleep(rng.random() / 50)
        used = rng.randint(5, got.tokens)
        await record_usage(db, _event(i, key.id, used, clock[0]), got)
        billed[got.period_start] = billed.get(got.period_start, 0) + used

    await asyncio.gather(*(one(i) for i in range(20)))
    assert refusals, "ten requests of up to 12 tokens must overflow a 60-token day"
    assert sorted(billed) == [midnight - 86400, midnight], "both days must have served requests"
    assert billed[midnight - 86400] <= limit and billed[midnight] <= limit
    assert "the budget resets at 2026-05-0" in refusals[0].message
    row = await db.execute_read(
        lambda c: c.execute(
            "SELECT tokens_used, tokens_reserved, period_tokens_used, period_start FROM api_keys WHERE id = ?",
            (key.id,),
        ).fetchone()
    )
    ledger = await db.execute_read(
        lambda c: c.execute(
            "SELECT SUM(prompt_tokens + completion_tokens), COUNT(*) FROM token_usage_events"
        ).fetchone()
    )
    rollup = await db.execute_read(
        lambda c: c.execute("SELECT SUM(prompt_tokens + completion_tokens), SUM(requests) FROM usage_daily").fetchone()
    )
    assert tuple(ledger) == tuple(rollup)
    assert row["tokens_used"] == ledger[0] == sum(billed.values())
    assert row["tokens_reserved"] == 0
    assert row["period_start"] == midnight
    # What was reserved after midnight settles into the new day's counter; the old day's does not.
    assert row["period_tokens_used"] == billed[midnight]


def _event(i: int, key_id: int, used: int, when: float) -> UsageEvent:
    return UsageEvent(
        request_id=f"r{i}",
        api_key_id=key_id,
        model="m",
        endpoint="chat.completions",
        prompt_tokens=3,
        completion_tokens=used - 3,
        status=200,
        created_at=when,
    )


@pytest.mark.asyncio
async def test_rollups_follow_every_ledger_row(db: Database, repo: KeyRepository) -> None:
    _, key = await repo.create_key("k")
    day = _ts("2026-06-01T10:00:00+00:00")
    for i, status in enumerate([200, 200, 429, 502]):
        event = UsageEvent(f"x{i}", key.id, "m", "completions", 2, 3 if status == 200 else 0, status, created_at=day)
        await record_usage(db, event)
    await record_usage(db, UsageEvent("anon", None, "m", "completions", 1, 0, 401, created_at=day + 86400))
    rows = await db.execute_read(
        lambda c: [tuple(r) for r in c.execute("SELECT * FROM usage_daily ORDER BY day, status_class")]
    )
    assert rows == [
        ("2026-06-01", key.id, "m", "completions", "2xx", 2, 4, 6, day),
        ("2026-06-01", key.id, "m", "completions", "4xx", 1, 2, 0, day),
        ("2026-06-01", key.id, "m", "completions", "5xx", 1, 2, 0, day),
        ("2026-06-02", 0, "m", "completions", "4xx", 1, 1, 0, day + 86400),
    ]


def test_existing_history_is_rolled_up_by_the_migration(tmp_path: Path) -> None:
    old = tmp_path / "old-migrations"
    old.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("2025010100*.sql")):
        shutil.copy(f, old / f.name)
    path = tmp_path / "app.db"
    apply_migrations(path, old)
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO api_keys (public_id, name, secret_hash, last_four, created_at, updated_at) "
        "VALUES ('p', 'k', 'h', 'abcd', 0, 0)"
    )
    for i in range(30):
        conn.execute(
            "INSERT INTO token_usage_events (request_id, api_key_id, model, endpoint, prompt_tokens, "
            "completion_tokens, status, created_at) VALUES (?, 1, 'm', 'chat.completions', 2, 5, ?, ?)",
            (f"r{i}", 200 if i % 3 else 500, 1_700_000_000 + i * 10_000),
        )
    conn.commit()
    conn.close()
    assert "20250102000100_admin" in apply_migrations(path)
    conn = sqlite3.connect(path)
    rolled = conn.execute(
        "SELECT SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) FROM usage_daily"
    ).fetchone()
    errors = conn.execute("SELECT SUM(requests) FROM usage_daily WHERE status_class = '5xx'").fetchone()
    days = conn.execute("SELECT COUNT(DISTINCT day) FROM usage_daily").fetchone()
    conn.close()
    assert (
        rolled == (30, 60, 150) and errors == (10,) and days[0] == 5
    )  # 300,000 s from 1,700,000,000 spans five UTC days


def test_budget_429_says_when_the_budget_resets(proxy: Proxy, openai_client: object) -> None:
    key = proxy.make_key("tiny-daily", token_limit=5, budget_period="daily")
    client = openai_client(proxy.base_url, key)  # type: ignore[operator]
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=5)
    tomorrow = datetime.fromtimestamp(period_bounds("daily", datetime.now(timezone.utc).timestamp())[1], timezone.utc)
    assert f"the budget resets at {tomorrow.isoformat(timespec='seconds')}" in str(info.value)
    assert info.value.response.headers["x-budget-resets-at"] == tomorrow.isoformat(timespec="seconds")
    assert int(info.value.response.headers["retry-after"]) > 0


def test_client_address_allow_list(proxy: Proxy, openai_client: object) -> None:
    outside = proxy.make_key("office-only", allowed_cidrs=["10.0.0.0/8"])
    inside = proxy.make_key("loopback-ok", allowed_cidrs=["127.0.0.0/8", "10.0.0.0/8"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        openai_client(proxy.base_url, outside).chat.completions.create(  # type: ignore[operator]
            model="smollm2", messages=HELLO, max_tokens=1
        )
    assert info.value.code == "address_not_allowed"
    ok = openai_client(proxy.base_url, inside).chat.completions.create(  # type: ignore[operator]
        model="smollm2", messages=HELLO, max_tokens=1
    )
    assert ok.usage is not None
    # Without trusted proxies, a forged X-Forwarded-For changes nothing.
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {outside}", "X-Forwarded-For": "10.1.2.3"},
        json={"model": "smollm2", "messages": HELLO, "max_tokens": 1},
    )
    assert r.status_code == 403


def test_trusted_proxy_forwards_the_client_address(make_proxy: object, shared_daemon: Daemon) -> None:
    proxy: Proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_TRUSTED_PROXIES="127.0.0.1").start()  # type: ignore[operator]
    key = proxy.make_key("office-only", allowed_cidrs=["10.0.0.0/8"])
    body = {"model": "smollm2", "messages": HELLO, "max_tokens": 1}
    url, auth = f"{proxy.base_url}/chat/completions", {"Authorization": f"Bearer {key}"}
    assert httpx.post(url, headers={**auth, "X-Forwarded-For": "10.1.2.3"}, json=body, timeout=30).status_code == 200
    # The rightmost untrusted hop is the client: a client cannot prepend its way in.
    spoofed = {**auth, "X-Forwarded-For": "10.9.9.9, 192.0.2.7"}
    assert httpx.post(url, headers=spoofed, json=body, timeout=30).status_code == 403
    assert httpx.post(url, headers=auth, json=body, timeout=30).status_code == 403


@pytest.mark.asyncio
async def test_cached_reports_equal_fresh_ones_and_see_today_change(db: Database, repo: KeyRepository) -> None:

    _, key = await repo.create_key("k")
    now = _ts("2026-07-10T12:00:00+00:00")
    for day in range(5):
        for i, status in enumerate((200, 200, 500)):
            when = now - day * 86400
            event = UsageEvent(f"d{day}-{i}", key.id, f"m{day % 2}", "chat.completions", 3, 4, status, created_at=when)
            await record_usage(db, event)
    reports = UsageReports(db)
    flt = UsageFilter("2026-07-01", "2026-07-10")
    assert await reports.report(flt, now) == await usage_report(db, flt)
    await record_usage(db, UsageEvent("late", key.id, "m9", "completions", 1, 1, 200, created_at=now + 60))
    cached = await reports.report(flt, now + 120)
    assert cached == await usage_report(db, flt)
    assert cached.totals["requests"] == 16 and {m["model"] for m in cached.by_model} == {"m0", "m1", "m9"}


@pytest.mark.asyncio
async def test_retention_deletes_old_raw_events_and_keeps_the_rollups(db: Database, repo: KeyRepository) -> None:
    _, key = await repo.create_key("k")
    now = _ts("2026-08-01T12:00:00+00:00")
    for i in range(12):
        await record_usage(db, UsageEvent(f"r{i}", key.id, "m", "completions", 1, 2, 200, created_at=now - i * 86400))
    assert await purge_events(db, 5, now=now, batch=4) == 6  # days 6..11 are past five days
    left = await db.execute_read(lambda c: c.execute("SELECT COUNT(*) FROM token_usage_events").fetchone()[0])
    rolled = await db.execute_read(lambda c: c.execute("SELECT SUM(requests) FROM usage_daily").fetchone()[0])
    assert (left, rolled) == (6, 12)
    assert (await usage_report(db, UsageFilter("2026-07-01", "2026-08-01"))).totals["requests"] == 12
