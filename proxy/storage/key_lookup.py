"""The reads a key verifier makes: a key by its public id, and the keys that changed since a version.

Triggers bump ``api_key_changes.version`` whenever a key is created, deleted or changed in a way
that matters to verification (not on usage counters). Each read returns the version it reflects,
read in the same snapshot as the rows, so a verifier can tell whether what it caches is current.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable
from typing import TypeVar

from proxy.storage.api_keys import KEY_COLUMNS, ApiKey, select_key
from proxy.storage.database import Database

T = TypeVar("T")


async def lookup_key(db: Database, public_id: str) -> tuple[ApiKey | None, int]:
    """The key with ``public_id`` (None if there is none) and the change version it reflects."""

    def read(conn: sqlite3.Connection) -> tuple[ApiKey | None, int]:
        return select_key(conn, public_id), _version(conn)

    return await db.execute_read(lambda conn: _snapshot(conn, read))


async def changed_keys(db: Database, known: int, ids: Collection[int]) -> tuple[int, list[ApiKey] | None]:
    """The current change version, and the rows of ``ids`` (those still there) if it is not ``known``."""

    def read(conn: sqlite3.Connection) -> tuple[int, list[ApiKey] | None]:
        version = _version(conn)
        return version, (select_keys(conn, ids) if version != known else None)

    return await db.execute_read(lambda conn: _snapshot(conn, read))


def select_keys(conn: sqlite3.Connection, ids: Iterable[int]) -> list[ApiKey]:
    """The keys with these ids (those that still exist)."""
    wanted = list(ids)
    keys: list[ApiKey] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id IN ({marks})", chunk)
        keys.extend(ApiKey.from_row(row) for row in rows)
    return keys


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM api_key_changes WHERE id = 1").fetchone()
    return int(row[0]) if row is not None else 0


def _snapshot(conn: sqlite3.Connection, read: Callable[[sqlite3.Connection], T]) -> T:
    """``read(conn)`` inside one read transaction: the rows and the version from the same snapshot."""
    conn.execute("BEGIN")
    try:
        return read(conn)
    finally:
        conn.execute("COMMIT")
