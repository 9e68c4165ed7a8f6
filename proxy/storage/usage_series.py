"""Time series for the console's charts, read from the hourly rollups only (``proxy.storage.hourly``).

A series is one point per hour or per UTC day over a range, optionally for one key and/or one
model: requests, errors, prompt and completion tokens and the p50/p95 latency of the successes
(estimated from the rollup's histograms, ``proxy.storage.latency``). Every point of the range is
there, quiet ones as zeros, so a chart's x axis is time, never "the next busy bucket".

Cost: a range of one rollup's primary key, grouped by bucket in SQL: ``usage_hourly`` (all keys,
``(hour, model)``: a day is 24 rows per model that had traffic) or, for one key,
``usage_hourly_key`` (``(api_key_id, hour, model)``: that key's rows only). :class:`UsageSeries`
keeps closed buckets in memory (as ``UsageReports`` keeps closed days): a bucket stops changing
once it is over (plus ``CLOSE_MARGIN`` for the last commits), so each chart after the first scans
only the open bucket (the current hour or day) and whatever part of the range it has not read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Literal

from proxy.storage.database import Database
from proxy.storage.latency import COLUMNS, percentile
from proxy.storage.usage_report import CLOSE_MARGIN, UsageFilter

Bucket = Literal["hour", "day"]
HOURS: dict[str, int] = {"hour": 1, "day": 24}
_EPOCH = date(1970, 1, 1)
_SUMS = "SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), " + ", ".join(
    f"SUM({c})" for c in COLUMNS
)


@dataclass(frozen=True)
class SeriesPoint:
    """One bucket: its start (Unix seconds, UTC), its counts and its latency histogram."""

    start: float
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: tuple[int, ...] = ()

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latency, 0.5) if self.latency else None

    @property
    def p95_ms(self) -> float | None:
        return percentile(self.latency, 0.95) if self.latency else None

    def as_json(self) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.start, timezone.utc).isoformat().replace("+00:00", "Z")
        return {
            "start": stamp,
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
        }


@dataclass(frozen=True)
class SeriesQuery:
    """Buckets ``first``..``last`` (inclusive, counted from the epoch in ``bucket`` units) of a filter."""

    bucket: Bucket
    first: int
    last: int
    api_key_id: int | None = None
    model: str | None = None

    @classmethod
    def of(cls, flt: UsageFilter, bucket: Bucket, most: int | None = None) -> SeriesQuery:
        """The filter's days in ``bucket``s; with ``most``, only the last ``most`` buckets of them."""
        size = HOURS[bucket]
        first = (date.fromisoformat(flt.since) - _EPOCH).days * 24 // size
        last = ((date.fromisoformat(flt.until) - _EPOCH).days * 24 + 23) // size
        if most is not None:
            first = max(first, last - most + 1)
        return cls(bucket, first, last, flt.api_key_id, flt.model)

    def sql(self, first: int, last: int) -> tuple[str, list[Any]]:
        """The rollup scan of buckets ``first``..``last``, one row per bucket with traffic."""
        size = HOURS[self.bucket]
        table, clauses = "usage_hourly", ["hour BETWEEN ? AND ?"]
        params: list[Any] = [first * size, last * size + size - 1]
        if self.api_key_id is not None:
            table = "usage_hourly_key"
            clauses.insert(0, "api_key_id = ?")
            params.insert(0, self.api_key_id)
        if self.model:
            clauses.append("model = ?")
            params.append(self.model)
        where = " AND ".join(clauses)
        return f"SELECT hour / {size} AS slot, {_SUMS} FROM {table} WHERE {where} GROUP BY slot", params


async def _scan(db: Database, query: SeriesQuery, first: int, last: int) -> dict[int, SeriesPoint]:
    """The buckets ``first``..``last`` of ``query`` that had traffic, by bucket number."""
    if first > last:
        return {}
    size = HOURS[query.bucket]
    sql, params = query.sql(first, last)
    rows = await db.execute_read(lambda conn: conn.execute(sql, params).fetchall())
    return {int(r[0]): _point(int(r[0]) * size * 3600.0, r[1:]) for r in rows}


def _point(start: float, sums: Any) -> SeriesPoint:
    requests, errors, prompt, completion = (int(n or 0) for n in sums[:4])
    return SeriesPoint(start, requests, errors, prompt, completion, tuple(int(n) for n in sums[4:]))


def _fill(query: SeriesQuery, found: dict[int, SeriesPoint]) -> list[SeriesPoint]:
    span = HOURS[query.bucket] * 3600.0
    return [found.get(slot) or SeriesPoint(slot * span) for slot in range(query.first, query.last + 1)]


async def usage_series(db: Database, query: SeriesQuery) -> list[SeriesPoint]:
    """Every bucket of ``query``, read now (no cache; see :class:`UsageSeries`)."""
    return _fill(query, await _scan(db, query, query.first, query.last))


class UsageSeries:
    """:func:`usage_series` with closed buckets kept in memory, per (bucket size, key, model).

    For each of those the cache holds one contiguous run of closed buckets (those with traffic, by
    number) and the run's bounds; a query reads from the rollup only the closed buckets outside
    the run (which then grows to cover them) and the open ones. A query whose range neither
    overlaps nor touches the run starts a new one, so the run never spans a gap nobody asked for.
    Least recently used out after ``size`` filters.
    """

    def __init__(self, db: Database, size: int = 64) -> None:
        self._db, self._size = db, size
        self._runs: OrderedDict[tuple[Any, ...], tuple[int, int, dict[int, SeriesPoint]]] = OrderedDict()

    async def series(self, query: SeriesQuery, now: float | None = None) -> list[SeriesPoint]:
        span = HOURS[query.bucket] * 3600
        last_closed = int(((time.time() if now is None else now) - CLOSE_MARGIN) // span) - 1
        closed_end = min(query.last, last_closed)
        found: dict[int, SeriesPoint] = {}
        if closed_end >= query.first:
            found.update(await self._closed(query, closed_end))
        found.update(await _scan(self._db, query, max(query.first, closed_end + 1), query.last))
        return _fill(query, found)

    async def _closed(self, query: SeriesQuery, end: int) -> dict[int, SeriesPoint]:
        ident = (query.bucket, query.api_key_id, query.model)
        low, high, points = self._runs.pop(ident, (query.first, query.first - 1, {}))
        if high < low or query.first > high + 1 or end < low - 1:  # nothing read yet, or not next to the run
            points = await _scan(self._db, query, query.first, end)
            low, high = query.first, end
        else:
            if query.first < low:
                points.update(await _scan(self._db, query, query.first, low - 1))
                low = query.first
            if end > high:
                points.update(await _scan(self._db, query, high + 1, end))
                high = end
        self._runs[ident] = (low, high, points)  # most recently used last
        while len(self._runs) > self._size:
            self._runs.popitem(last=False)
        return {slot: p for slot, p in points.items() if query.first <= slot <= end}
