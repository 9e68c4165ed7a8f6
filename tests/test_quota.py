"""Quotas (atomic reservations, settlement, two processes) and the per-minute windows."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from proxy.metering.ratelimit import RateLimiter, format_duration
from proxy.storage.api_keys import ApiKey, KeyRepository
from proxy.storage.database import Database
from proxy.storage.errors import KeyNotFoundError
from proxy.storage.owner import ReservationOwner, owners_dir
from proxy.storage.usage import (
    QuotaExceeded,
    Reservation,
    UsageEvent,
    reclaim_stale_reservations,
    record_usage,
    release,
    reserve,
)

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(30)


async def counters(repo: KeyRepository, key: ApiKey) -> tuple[int, int, int]:
    row = await repo.get_key(key.id)
    assert row is not None
    return row.tokens_used, row.tokens_reserved, row.request_count


def usage(request_id: str, key: ApiKey, prompt: int, completion: int) -> UsageEvent:
    return UsageEvent(request_id, key.id, "smollm2", "/v1/chat/completions", prompt, completion, 200)


@pytest.mark.asyncio
async def test_concurrent_reservations_never_exceed_the_limit(repo: KeyRepository, db: Database) -> None:
    _, key = await repo.create_key("app", token_limit=1000)
    results = await asyncio.gather(*(reserve(db, key.id, 100) for _ in range(50)))
    admitted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(admitted) == 10 and len(refused) == 40
    assert await counters(repo, key) == (0, 1000, 0)
    assert refused[0].remaining == 0 and "1000-token quota" in refused[0].message


@pytest.mark.asyncio
async def test_settlement_moves_the_real_count_and_frees_the_rest(repo: KeyRepository, db: Database) -> None:
    _, key = await repo.create_key("app", token_limit=300)
    first = await reserve(db, key.id, 200)
    assert isinstance(first, Reservation)
    assert isinstance(await reserve(db, key.id, 101), QuotaExceeded)
    await record_usage(db, usage("r1", key, 20, 30), first)
    assert await counters(repo, key) == (50, 0, 1)
    second = await reserve(db, key.id, 250)
    assert isinstance(second, Reservation)
    refused = await reserve(db, key.id, 1)
    assert isinstance(refused, QuotaExceeded) and (refused.tokens_used, refused.tokens_reserved) == (50, 250)
    await record_usage(db, usage("r2", key, 100, 150), second)
    settled = await repo.get_key(key.id)
    assert settled is not None
    assert (settled.tokens_used, settled.tokens_reserved, settled.request_count) == (300, 0, 2)
    assert settled.endpoint_counts == {"/v1/chat/completions": 2} and settled.last_request_at is not None
    assert isinstance(await reserve(db, key.id, 0), Reservation)  # zero always fits
    assert isinstance(await reserve(db, key.id, 1), QuotaExceeded)


@pytest.mark.asyncio
async def test_unlimited_keys_and_unknown_keys(repo: KeyRepository, db: Database) -> None:
    _, key = await repo.create_key("app")
    assert isinstance(await reserve(db, key.id, 10**9), Reservation)
    with pytest.raises(KeyNotFoundError):
        await reserve(db, 999, 1)


@pytest.mark.asyncio
async def test_release_and_reclaim_give_tokens_back_exactly_once(repo: KeyRepository, db: Database) -> None:
    _, key = await repo.create_key("app", token_limit=100)
    held = await reserve(db, key.id, 60)
    assert isinstance(held, Reservation)
    assert await release(db, held) == 60
    assert await release(db, held) == 0
    stale = await reserve(db, key.id, 70)
    assert isinstance(stale, Reservation)
    assert await reclaim_stale_reservations(db, older_than=60) == 0  # still young: untouched
    await asyncio.sleep(0.05)
    assert await reclaim_stale_reservations(db, older_than=0.01) == 1
    assert await counters(repo, key) == (0, 0, 0)
    await record_usage(db, usage("late", key, 5, 5), stale)  # settling a reclaimed reservation
    assert await counters(repo, key) == (10, 0, 1)


@pytest.mark.asyncio
async def test_reservations_of_a_dead_owner_are_released_at_once_a_live_owners_never(
    repo: KeyRepository, db: Database
) -> None:
    """Issue 25: a restart releases the reservations of the process it replaced at once (they waited
    for the age bound, 6 minutes); a live process's are untouched, whoever sweeps (another proxy)."""
    _, key = await repo.create_key("app", token_limit=1000)
    dead, live = ReservationOwner.claim(db.path), ReservationOwner.claim(db.path)
    for owner, tokens in ((dead, 300), (live, 200)):
        db.reservation_owner = owner.id
        assert isinstance(await reserve(db, key.id, tokens), Reservation)
    os.close(dead._fd)  # killed: the kernel drops its lock, its file stays behind
    db.reservation_owner = None  # the sweeper: another process
    assert await reclaim_stale_reservations(db, older_than=3600) == 1
    assert await counters(repo, key) == (0, 200, 0)
    assert not (owners_dir(db.path) / dead.id).exists()
    assert await reclaim_stale_reservations(db, older_than=3600) == 0  # the live owner's stay
    live.close()  # a clean stop (its requests settled)
    assert await reclaim_stale_reservations(db, older_than=3600) == 1


CONTENDER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from proxy.storage.database import Database
    from proxy.storage.usage import Reservation, reserve

    async def main():
        path, key_id, start = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
        async with Database.open(path, migrate=False) as db:
            await asyncio.sleep(max(0.0, start - time.time()))
            admitted, last = 0, 1
            while last:  # rounds of 10 concurrent reservations until a whole round is refused
                results = await asyncio.gather(*(reserve(db, key_id, 10) for _ in range(10)))
                last = sum(isinstance(r, Reservation) for r in results)
                admitted += last
                await asyncio.sleep(0.002)  # between rounds, as requests arrive: the other process gets its turn
        sys.stdout.write(str(admitted))

    asyncio.run(main())
    """
)


@pytest.mark.asyncio
async def test_two_processes_sharing_the_file_cannot_overshoot(repo: KeyRepository, db: Database) -> None:
    _, key = await repo.create_key("app", token_limit=20_005)
    start = time.time() + 3.0  # both processes must be up by then, even on a loaded machine
    args = [sys.executable, "-c", CONTENDER, str(db.path), str(key.id), str(start)]
    procs = [subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [await asyncio.to_thread(p.communicate, timeout=20) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    admitted = [int(out) for out, _ in outputs]
    assert sum(admitted) == 2000, admitted  # 10-token reservations under 20005: exactly 2000 fit
    assert min(admitted) > 0, admitted  # both processes really competed
    assert await counters(repo, key) == (0, 20_000, 0)


def test_usage_event_refuses_what_would_corrupt_the_ledger() -> None:
    with pytest.raises(ValueError):
        UsageEvent("", 1, "m", "/v1/x", 1, 1, 200)
    with pytest.raises(ValueError):
        UsageEvent("r", 1, "m", "/v1/x", -1, 1, 200)
    with pytest.raises(ValueError):
        UsageEvent("r", 1, "m", '/v1/"x', 1, 1, 200)


@pytest.mark.asyncio
async def test_endpoint_counts_are_kept_per_endpoint(repo: KeyRepository, db: Database) -> None:
    _, key = await repo.create_key("app")
    for i, endpoint in enumerate(["/v1/chat/completions", "/v1/audio/speech", "/v1/chat/completions"]):
        await record_usage(db, UsageEvent(f"r{i}", key.id, "m", endpoint, 1, 0, 200))
    row = await repo.get_key(key.id)
    assert row is not None
    assert json.loads(json.dumps(dict(row.endpoint_counts))) == {
        "/v1/chat/completions": 2,
        "/v1/audio/speech": 1,
    }


# --- per-minute windows -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_window() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    first = limiter.check(1, rpm=2, tpm=None, tokens=10)
    assert first.allowed and first.tokens is None
    assert first.headers() == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
    }
    assert limiter.check(1, rpm=2, tpm=None, tokens=10).allowed
    refused = limiter.check(1, rpm=2, tpm=None, tokens=10)
    assert not refused.allowed and refused.retry_after == pytest.approx(30.0)
    assert refused.headers()["retry-after"] == "30" and refused.headers()["retry-after-ms"] == "30000"
    assert limiter.check(2, rpm=2, tpm=None, tokens=10).allowed  # other keys are not affected
    clock.now += 30
    assert limiter.check(1, rpm=2, tpm=None, tokens=10).allowed
    assert limiter.check(1, rpm=None, tpm=None, tokens=10).allowed  # limit removed


def test_tokens_per_minute_window_takes_both_or_nothing() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.check(1, rpm=10, tpm=1000, tokens=800).allowed
    refused = limiter.check(1, rpm=10, tpm=1000, tokens=300)
    assert not refused.allowed and refused.retry_after == pytest.approx(6.0)
    assert refused.requests is not None and refused.requests.remaining == 9  # no request was taken
    assert refused.tokens is not None and refused.tokens.remaining == 200
    assert refused.headers()["x-ratelimit-reset-tokens"] == "48s"
    too_big = limiter.check(1, rpm=10, tpm=1000, tokens=1001)
    assert not too_big.allowed and too_big.retry_after is None and "retry-after" not in too_big.headers()
    clock.now += 6
    assert limiter.check(1, rpm=10, tpm=1000, tokens=300).allowed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.02, "20ms"), (0.0, "0ms"), (1.0, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3723, "1h2m3s")],
)
def test_reset_durations_read_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
