"""Usage figures for the admin console, read from the ``usage_daily`` rollups only.

The rollups hold one row per (UTC day, key, model, endpoint, status class), written in the same
transaction as each ledger row (``proxy.storage.usage``), so every figure here costs a scan of
rollup rows in the chosen days, never of the raw ledger; that keeps the usage page fast over
millions of requests. The one exception is :func:`requests_per_minute`, which reads the last hour
of the ledger through its ``created_at`` index (at most one hour of rows). :func:`purge_events`
applies the raw-event retention; rollups are kept.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from proxy.storage.database import Database
from proxy.storage.errors import ValidationError

_SUMS = (
    "SUM(u.requests) AS requests, SUM(u.prompt_tokens) AS prompt_tokens, "
    "SUM(u.completion_tokens) AS completion_tokens, "
    "SUM(CASE WHEN u.status_class IN ('4xx', '5xx') THEN u.requests ELSE 0 END) AS errors, "
    "MAX(u.last_request_at) AS last_request_at"
)


@dataclass(frozen=True)
class UsageFilter:
    """Days are inclusive ``YYYY-MM-DD`` (UTC); ``api_key_id``/``model`` narrow it down."""

    since: str
    until: str
    api_key_id: int | None = None
    model: str | None = None

    @classmethod
    def last_days(cls, days: int, now: float | None = None, **kw: Any) -> UsageFilter:
        today = date(*time.gmtime(time.time() if now is None else now)[:3])
        return cls((today - timedelta(days=days - 1)).isoformat(), today.isoformat(), **kw)

    def __post_init__(self) -> None:
        for value in (self.since, self.until):
            try:
                date.fromisoformat(value)
            except (TypeError, ValueError):
                raise ValidationError(f"{str(value)[:40]!r} is not a day (YYYY-MM-DD)") from None
        if self.since > self.until:
            raise ValidationError("the first day is after the last day")

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = ["u.day BETWEEN ? AND ?"]
        params: list[Any] = [self.since, self.until]
        if self.api_key_id is not None:
            clauses.append("u.api_key_id = ?")
            params.append(self.api_key_id)
        if self.model:
            clauses.append("u.model = ?")
            params.append(self.model)
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class UsageReport:
    totals: dict[str, Any]
    by_day: list[dict[str, Any]]
    by_key: list[dict[str, Any]]
    by_model: list[dict[str, Any]]
    by_status: list[dict[str, Any]]
    by_endpoint: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def usage_report(db: Database, flt: UsageFilter) -> UsageReport:
    """Everything the usage page shows for ``flt``, in one read on one connection."""
    return await db.execute_read(lambda conn: _report(conn, flt))


def _report(conn: sqlite3.Connection, flt: UsageFilter) -> UsageReport:
    where, params = flt.where()

    def rows(group: str, extra: str = "", order: str = "requests DESC") -> list[dict[str, Any]]:
        join = _JOIN if extra else ""
        sql = f"SELECT {group}{extra}, {_SUMS} FROM usage_daily u {join} WHERE {where} GROUP BY {group}"
        sql += f" ORDER BY {order}"
        return [_fill(dict(r)) for r in conn.execute(sql, params)]

    totals = _fill(dict(conn.execute(f"SELECT {_SUMS} FROM usage_daily u WHERE {where}", params).fetchone()))
    endpoints = rows("u.api_key_id, u.endpoint", order="u.api_key_id")
    by_key = rows("u.api_key_id", extra=", k.name AS key_name, k.last_four AS last_four")
    for key in by_key:
        key["endpoints"] = {e["endpoint"]: e["requests"] for e in endpoints if e["api_key_id"] == key["api_key_id"]}
    return UsageReport(
        totals=totals,
        by_day=rows("u.day", order="u.day"),
        by_key=by_key,
        by_model=rows("u.model"),
        by_status=rows("u.status_class", order="u.status_class"),
        by_endpoint=rows("u.endpoint"),
    )


_JOIN = "LEFT JOIN api_keys k ON k.id = u.api_key_id"


def _fill(row: dict[str, Any]) -> dict[str, Any]:
    for name in ("requests", "prompt_tokens", "completion_tokens", "errors"):
        if name in row:
            row[name] = row[name] or 0
    if "prompt_tokens" in row:
        row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    return row


async def requests_per_minute(db: Database, now: float | None = None, minutes: int = 60) -> list[int]:
    """Requests in each of the last ``minutes`` minutes, oldest first (from the ledger's time index)."""
    now = time.time() if now is None else now
    first = int(now // 60) - minutes + 1
    sql = (
        "SELECT CAST(created_at / 60 AS INTEGER) AS minute, COUNT(*) FROM token_usage_events "
        "WHERE created_at >= ? GROUP BY minute"
    )
    counts = dict(await db.execute_read(lambda c: c.execute(sql, (first * 60.0,)).fetchall()))
    return [int(counts.get(first + i, 0)) for i in range(minutes)]


async def purge_events(db: Database, older_than_days: float, now: float | None = None, batch: int = 5000) -> int:
    """Delete raw ledger rows older than the retention (in batches, so writes are not held up); the count."""
    cutoff = (time.time() if now is None else now) - older_than_days * 86400
    sql = (
        "DELETE FROM token_usage_events WHERE id IN "
        "(SELECT id FROM token_usage_events WHERE created_at < ? ORDER BY created_at LIMIT ?)"
    )
    total = 0
    while True:
        n = await db.execute_write(lambda c: c.execute(sql, (cutoff, batch)).rowcount)
        total += n
        if n < batch:
            return total
