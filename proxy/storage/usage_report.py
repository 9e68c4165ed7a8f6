"""Usage figures for the admin console, read from the ``usage_daily`` rollups only.

The rollups hold one row per (UTC day, key, model, endpoint, status class), written in the same
transaction as each ledger row (``proxy.storage.usage``), so every figure here costs a scan of
rollup rows in the chosen days, never of the raw ledger; that keeps the usage page fast over
millions of requests. The one exception is :func:`requests_per_minute`, which reads the last hour
of the ledger through its ``created_at`` index (at most one hour of rows). :func:`purge_events`
applies the raw-event retention; rollups are kept.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, replace
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
        for field, value in (("since", self.since), ("until", self.until)):
            try:
                date.fromisoformat(value)
            except (TypeError, ValueError):
                raise ValidationError(f"{str(value)[:40]!r} is not a day (YYYY-MM-DD)", field=field) from None
        if self.since > self.until:
            raise ValidationError("the first day is after the last day", field="since")

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
    """Everything the usage page shows for ``flt``, read now (no cache; see :class:`UsageReports`)."""
    by_day, cells = await _scan(db, flt)
    return await _assemble(db, by_day, cells)


async def _scan(db: Database, flt: UsageFilter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two scans of the rollups in range, side by side on two reader connections.

    One groups by day (in primary-key order, no sort); the other by every dimension but the day
    (key, model, endpoint, status class: a few hundred cells at most), from which the totals and
    the per-key, per-model, per-status and per-endpoint figures are summed in :func:`_assemble`.
    """
    by_day, cells = await asyncio.gather(
        db.execute_read(lambda conn: _by_day(conn, flt)), db.execute_read(lambda conn: _cells(conn, flt))
    )
    return by_day, cells


async def _assemble(db: Database, by_day: list[dict[str, Any]], cells: list[dict[str, Any]]) -> UsageReport:
    names = await db.execute_read(lambda conn: _key_names(conn, {c["api_key_id"] for c in cells}))
    by_key = _sum_by(cells, ("api_key_id",))
    endpoints: dict[Any, dict[str, int]] = {}
    for cell in cells:  # one pass, not one per key: a 90-day report has about a thousand cells
        counts = endpoints.setdefault(cell["api_key_id"], {})
        counts[cell["endpoint"]] = counts.get(cell["endpoint"], 0) + cell["requests"]
    for row in by_key:
        row["key_name"], row["last_four"] = names.get(row["api_key_id"], (None, None))
        mine = endpoints.get(row["api_key_id"], {})
        row["endpoints"] = dict(sorted(mine.items(), key=lambda item: -item[1]))
    totals = _sum_by(cells, ())
    return UsageReport(
        totals=totals[0] if totals else _sum_by([_EMPTY], ())[0],
        by_day=by_day,
        by_key=by_key,
        by_model=_sum_by(cells, ("model",)),
        by_status=sorted(_sum_by(cells, ("status_class",)), key=lambda r: str(r["status_class"])),
        by_endpoint=_sum_by(cells, ("endpoint",)),
    )


_EMPTY: dict[str, Any] = {
    "requests": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "errors": 0,
    "last_request_at": None,
}
CLOSE_MARGIN = 600.0  # seconds after midnight (UTC) before a day's rollups are taken as final


class UsageReports:
    """:func:`usage_report` with the closed days' part kept in memory.

    A day's rollups stop changing once it is over (a row is dated when its request ends, and is
    committed within moments; :data:`CLOSE_MARGIN` covers the last of them). So for a filter, the
    part up to the last closed day is scanned once and kept (a few hundred cells and one row per
    day, least recently used out after ``size`` filters), and each report scans only the open
    days (usually just today) and adds them. Rollups are never deleted (retention removes raw
    events only), so nothing cached goes stale.
    """

    def __init__(self, db: Database, size: int = 64) -> None:
        self._db, self._size = db, size
        self._closed: dict[tuple[Any, ...], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}

    async def report(self, flt: UsageFilter, now: float | None = None) -> UsageReport:
        last_closed = date(*time.gmtime((time.time() if now is None else now) - CLOSE_MARGIN)[:3]) - timedelta(days=1)
        split = min(date.fromisoformat(flt.until), last_closed)
        if split < date.fromisoformat(flt.since):
            return await usage_report(self._db, flt)
        closed = await self._closed_part(replace(flt, until=split.isoformat()))
        by_day, cells = list(closed[0]), list(closed[1])
        if split < date.fromisoformat(flt.until):
            open_days, open_cells = await _scan(self._db, replace(flt, since=(split + timedelta(days=1)).isoformat()))
            by_day += open_days
            cells = _sum_by(cells + open_cells, ("api_key_id", "model", "endpoint", "status_class"))
        return await _assemble(self._db, by_day, cells)

    async def _closed_part(self, flt: UsageFilter) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        ident = (flt.since, flt.until, flt.api_key_id, flt.model)
        found = self._closed.pop(ident, None)
        if found is None:
            found = await _scan(self._db, flt)
            if len(self._closed) >= self._size:
                self._closed.pop(next(iter(self._closed)))
        self._closed[ident] = found  # most recently used last
        return found


def _by_day(conn: sqlite3.Connection, flt: UsageFilter) -> list[dict[str, Any]]:
    where, params = flt.where()
    sql = f"SELECT u.day, {_SUMS} FROM usage_daily u WHERE {where} GROUP BY u.day ORDER BY u.day"
    return [_fill(dict(r)) for r in conn.execute(sql, params)]


def _cells(conn: sqlite3.Connection, flt: UsageFilter) -> list[dict[str, Any]]:
    where, params = flt.where()
    dims = "u.api_key_id, u.model, u.endpoint, u.status_class"
    sql = f"SELECT {dims}, {_SUMS} FROM usage_daily u WHERE {where} GROUP BY {dims}"
    return [_fill(dict(r)) for r in conn.execute(sql, params)]


def _key_names(conn: sqlite3.Connection, ids: set[int]) -> dict[int, tuple[str, str]]:
    rows = conn.execute("SELECT id, name, last_four FROM api_keys").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows if r[0] in ids}


def _sum_by(cells: list[dict[str, Any]], dims: tuple[str, ...]) -> list[dict[str, Any]]:
    """Cells summed by ``dims``, most requests first."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for cell in cells:
        ident = tuple(cell[d] for d in dims)
        row = groups.get(ident)
        if row is None:
            row = groups[ident] = {
                **{d: cell[d] for d in dims},
                "requests": 0,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "errors": 0,
                "last_request_at": None,
            }
        for name in ("requests", "prompt_tokens", "completion_tokens", "errors"):
            row[name] += cell[name]
        if cell["last_request_at"] is not None:
            row["last_request_at"] = max(row["last_request_at"] or 0.0, cell["last_request_at"])
    return sorted((_fill(r) for r in groups.values()), key=lambda r: -r["requests"])


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
