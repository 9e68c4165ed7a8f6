"""The hourly rollups' writer: one ledger row added to its hour, in the row's own transaction.

Two tables (migration ``20250110040000_usage_hourly``) hold, per UTC hour, requests, errors
(status 400 and up), prompt and completion tokens and the latency histogram of
``proxy.storage.latency``: ``usage_hourly`` per model, over all keys (the usage page and a model's
charts), and ``usage_hourly_key`` per key and model (a key's charts). Keeping the all-keys table
apart makes an unfiltered chart read a few rows an hour however many keys were busy, and a key's
primary key range holds only that key's hours. :func:`add_to_hourly_on` runs inside the
transaction that writes the ledger row (``proxy.storage.usage.record_usage_on``), as the daily
rollup does: one UPSERT per table that touches the one histogram column the request falls in (a
statement per bucket, and one for a request without a latency or with an error, built here once).
"""

from __future__ import annotations

import sqlite3
from typing import Protocol

from proxy.storage.latency import COLUMNS, bucket_of

_ADD = (
    "requests = requests + 1, errors = errors + excluded.errors, "
    "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens"
)


def _upsert(table: str, dims: tuple[str, ...], column: str | None) -> str:
    names = (*dims, "requests", "errors", "prompt_tokens", "completion_tokens", *([column] if column else []))
    marks = ", ".join("?" * len(dims)) + ", 1, ?, ?, ?" + (", 1" if column else "")
    extra = f", {column} = {column} + 1" if column else ""
    conflict = ", ".join(dims)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) "
        f"ON CONFLICT ({conflict}) DO UPDATE SET {_ADD}{extra}"
    )


def _statements(table: str, dims: tuple[str, ...]) -> tuple[str, ...]:
    """The UPSERT for each histogram bucket, then the one for a request outside the histogram."""
    return (*(_upsert(table, dims, c) for c in COLUMNS), _upsert(table, dims, None))


_ALL_KEYS = _statements("usage_hourly", ("hour", "model"))
_PER_KEY = _statements("usage_hourly_key", ("api_key_id", "hour", "model"))


class LedgerRow(Protocol):
    """What the rollups read of a usage event (``proxy.storage.usage.UsageEvent``)."""

    @property
    def api_key_id(self) -> int | None: ...
    @property
    def model(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def created_at(self) -> float: ...


def add_to_hourly_on(conn: sqlite3.Connection, row: LedgerRow) -> None:
    """Count ``row`` in its hour (on a connection inside the ledger row's write transaction)."""
    failed = row.status >= 400
    which = -1 if failed or row.latency_ms is None else bucket_of(row.latency_ms)
    hour = int(row.created_at // 3600)
    counts = (int(failed), row.prompt_tokens, row.completion_tokens)
    conn.execute(_ALL_KEYS[which], (hour, row.model, *counts))
    conn.execute(_PER_KEY[which], (row.api_key_id or 0, hour, row.model, *counts))
