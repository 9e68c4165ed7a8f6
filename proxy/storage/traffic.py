"""The dashboard's traffic figures for the last hour: success rate, latency and TTFT percentiles,
tokens per second, and requests, tokens and errors per model (issue 19).

The last hour is read from the ledger's ``created_at`` index, one hour of rows at most, never a
scan of the whole ledger. Two reads, side by side on two reader connections:

- the counts (requests, tokens, errors per model) are exact: ``COUNT``/``SUM`` over the hour;
- the percentiles and the decode rate come from the successful (2xx) rows, the newest
  :data:`SAMPLE_LIMIT` of them, so a busy hour costs a bounded read (an RK3588 NPU serves far fewer
  requests than that in an hour; the figures say how many rows they come from).

Whole UTC days (today, the last 7 days) come from the daily rollups instead (:func:`days`): one
range of ``usage_daily``'s primary key (it starts with the day) grouped by model, a few hundred
rows a day however many requests they sum.

The computations are pure functions (:func:`percentile`, :func:`success_rate`,
:func:`decode_rate`): a window without rows has no rate and no percentile (``None``, shown as a
dash), never a zero that would read as "everything failed" or "instant".

Definitions: an error is a 4xx or 5xx answer (as in the daily rollups); the success rate is the
share of the rest. Latency and TTFT percentiles are over successful requests (a refused request's
millisecond would flatter them), by the nearest-rank method (the value of a real request, no
interpolation). Tokens per second is the decode rate: completion tokens after the first, over the
time from the first token to the end, summed over the requests that have both (a weighted mean).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from proxy.storage.database import Database

HOUR = 3600.0
SAMPLE_LIMIT = 5_000  # a p95 from 5,000 requests is within a few ranks of the whole hour's
_INDEX = "INDEXED BY token_usage_events_created_at"  # never the model index's full scan for GROUP BY model
_COUNTS = (
    f"SELECT model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(status >= 400) "
    f"FROM token_usage_events {_INDEX} WHERE created_at >= ? GROUP BY model"
)
_DAYS = (
    "SELECT model, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
    "SUM(CASE WHEN status_class IN ('4xx', '5xx') THEN requests ELSE 0 END) "
    "FROM usage_daily WHERE day BETWEEN ? AND ? GROUP BY model"
)
_SAMPLE = (
    f"SELECT latency_ms, ttft_ms, completion_tokens FROM token_usage_events {_INDEX} "
    "WHERE created_at >= ? AND status BETWEEN 200 AND 299 ORDER BY created_at DESC LIMIT ?"
)


@dataclass(frozen=True)
class Timing:
    """One successful request's timings (ms) and its completion tokens."""

    latency_ms: float | None
    ttft_ms: float | None
    completion_tokens: int


@dataclass(frozen=True)
class ModelTraffic:
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    errors: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Traffic:
    """The figures of one window (``since`` to the time it was read)."""

    since: float
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    success_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    tokens_per_second: float | None
    sampled: int
    by_model: tuple[ModelTraffic, ...]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_tokens"] = self.total_tokens
        data["by_model"] = [{**asdict(m), "total_tokens": m.total_tokens} for m in self.by_model]
        return data


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of ``values``: the smallest value with at least
    ``q`` of them at or below it. None without values; the value itself with one."""
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered) - 1e-9) - 1)]


def success_rate(requests: int, errors: int) -> float | None:
    """The share of requests that did not fail (0..1); None when there were none."""
    if requests <= 0:
        return None
    return (requests - errors) / requests


def decode_rate(timings: Iterable[Timing]) -> float | None:
    """Tokens per second after the first token, over the requests that generated more than one.

    None when no request qualifies (no rows, single-token answers, or no TTFT recorded).
    """
    tokens = 0
    seconds = 0.0
    for t in timings:
        if t.latency_ms is None or t.ttft_ms is None or t.completion_tokens < 2 or t.latency_ms <= t.ttft_ms:
            continue
        tokens += t.completion_tokens - 1
        seconds += (t.latency_ms - t.ttft_ms) / 1000
    return tokens / seconds if seconds > 0 else None


def summarize(since: float, counts: Sequence[ModelTraffic], timings: Sequence[Timing]) -> Traffic:
    """The window's figures from its per-model counts and its successful requests' timings."""
    latencies = [t.latency_ms for t in timings if t.latency_ms is not None]
    ttfts = [t.ttft_ms for t in timings if t.ttft_ms is not None]
    requests = sum(m.requests for m in counts)
    errors = sum(m.errors for m in counts)
    return Traffic(
        since=since,
        requests=requests,
        errors=errors,
        prompt_tokens=sum(m.prompt_tokens for m in counts),
        completion_tokens=sum(m.completion_tokens for m in counts),
        success_rate=success_rate(requests, errors),
        latency_p50_ms=percentile(latencies, 0.5),
        latency_p95_ms=percentile(latencies, 0.95),
        ttft_p50_ms=percentile(ttfts, 0.5),
        ttft_p95_ms=percentile(ttfts, 0.95),
        tokens_per_second=decode_rate(timings),
        sampled=len(timings),
        by_model=tuple(sorted(counts, key=lambda m: (-m.requests, m.model))),
    )


async def last_hour(db: Database, now: float | None = None) -> Traffic:
    """The last hour's figures, from at most one hour of the ledger's ``created_at`` index."""
    since = (time.time() if now is None else now) - HOUR
    counts, timings = await asyncio.gather(
        db.execute_read(lambda conn: _counts(conn, since)),
        db.execute_read(lambda conn: _timings(conn, since)),
    )
    return summarize(since, counts, timings)


async def days(db: Database, first: date, last: date) -> Traffic:
    """Requests, tokens and errors per model over whole UTC days (inclusive), from the rollups; no
    times (the rollups keep none), so no percentiles and no decode rate."""
    rows = await db.execute_read(lambda conn: conn.execute(_DAYS, (first.isoformat(), last.isoformat())).fetchall())
    counts = [ModelTraffic(r[0], int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0)) for r in rows]
    start = datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp()
    return summarize(start, counts, [])


def utc_days(n: int, now: float | None = None) -> tuple[date, date]:
    """The first and last of the ``n`` UTC days ending today."""
    today = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).date()
    return today - timedelta(days=n - 1), today


def _counts(conn: sqlite3.Connection, since: float) -> list[ModelTraffic]:
    rows = conn.execute(_COUNTS, (since,)).fetchall()
    return [ModelTraffic(r[0], int(r[1]), int(r[2] or 0), int(r[3] or 0), int(r[4] or 0)) for r in rows]


def _timings(conn: sqlite3.Connection, since: float) -> list[Timing]:
    rows = conn.execute(_SAMPLE, (since, SAMPLE_LIMIT)).fetchall()
    return [Timing(r[0], r[1], int(r[2] or 0)) for r in rows]
