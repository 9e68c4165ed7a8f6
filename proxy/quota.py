"""Token quotas: atomic admission by reservation, released at settlement.

Admission reserves the request's worst case (prompt + max_tokens) in ONE conditional statement::

    UPDATE api_keys SET tokens_reserved = tokens_reserved + :n
    WHERE id = :key AND (token_limit IS NULL OR tokens_used + tokens_reserved + :n <= token_limit)

run on the single writer inside ``BEGIN IMMEDIATE``, so neither concurrent requests in one process
nor several processes sharing the file can overshoot the limit. Each reservation is also a
``quota_reservations`` row; settlement (``ledger.record_usage``) deletes it in the same
transaction that writes the usage event and moves the real count into ``tokens_used``. Rows left
behind by a process that died are reclaimed by :func:`reclaim_stale_reservations`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

from proxy.db import Database
from proxy.errors import KeyNotFoundError, ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one admitted request until it settles."""

    id: int
    api_key_id: int
    tokens: int
    created_at: float


@dataclass(frozen=True)
class QuotaExceeded:
    """Admission refused: the request's tokens do not fit under the key's limit."""

    api_key_id: int
    requested: int
    token_limit: int
    tokens_used: int
    tokens_reserved: int

    @property
    def remaining(self) -> int:
        return max(0, self.token_limit - self.tokens_used - self.tokens_reserved)

    @property
    def message(self) -> str:
        return (
            f"this request needs up to {self.requested} tokens but the key has {self.remaining} "
            f"left of its {self.token_limit}-token quota"
        )


async def reserve(db: Database, api_key_id: int, n_tokens: int) -> Reservation | QuotaExceeded:
    """Reserve ``n_tokens`` for a request of this key, or say why not."""
    if n_tokens < 0:
        raise ValidationError("cannot reserve a negative number of tokens")
    return await db.execute_write(lambda conn: reserve_on(conn, api_key_id, n_tokens, time.time()))


def reserve_on(conn: sqlite3.Connection, api_key_id: int, n_tokens: int, now: float) -> Reservation | QuotaExceeded:
    """:func:`reserve` on a connection already inside a write transaction."""
    admitted = conn.execute(
        "UPDATE api_keys SET tokens_reserved = tokens_reserved + :n WHERE id = :key "
        "AND (token_limit IS NULL OR tokens_used + tokens_reserved + :n <= token_limit) RETURNING id",
        {"n": n_tokens, "key": api_key_id},
    ).fetchone()
    if admitted is None:
        row = conn.execute(
            "SELECT token_limit, tokens_used, tokens_reserved FROM api_keys WHERE id = ?", (api_key_id,)
        ).fetchone()
        if row is None:
            raise KeyNotFoundError(f"no API key {api_key_id}")
        return QuotaExceeded(api_key_id, n_tokens, row[0], row[1], row[2])
    (reservation_id,) = conn.execute(
        "INSERT INTO quota_reservations (api_key_id, tokens, created_at) VALUES (?, ?, ?) RETURNING id",
        (api_key_id, n_tokens, now),
    ).fetchone()
    return Reservation(reservation_id, api_key_id, n_tokens, now)


def release_on(conn: sqlite3.Connection, reservation: Reservation) -> int:
    """Give a reservation's tokens back (once); how many were released (0 if already gone)."""
    row = conn.execute("DELETE FROM quota_reservations WHERE id = ? RETURNING tokens", (reservation.id,)).fetchone()
    if row is None:
        return 0
    conn.execute(
        "UPDATE api_keys SET tokens_reserved = MAX(0, tokens_reserved - ?) WHERE id = ?",
        (row[0], reservation.api_key_id),
    )
    return int(row[0])


async def release(db: Database, reservation: Reservation) -> int:
    """Give a reservation back without recording usage (a request refused after admission)."""
    return await db.execute_write(lambda conn: release_on(conn, reservation))


async def reclaim_stale_reservations(db: Database, older_than: float) -> int:
    """Release reservations older than ``older_than`` seconds (their process died); the count.

    Call it at start-up and periodically with a bound above the longest possible request (the
    request timeout plus a margin), so live requests are never touched.
    """
    cutoff = time.time() - older_than

    def reclaim(conn: sqlite3.Connection) -> int:
        rows = conn.execute(
            "DELETE FROM quota_reservations WHERE created_at < ? RETURNING api_key_id, tokens", (cutoff,)
        ).fetchall()
        for api_key_id, tokens in rows:
            conn.execute(
                "UPDATE api_keys SET tokens_reserved = MAX(0, tokens_reserved - ?) WHERE id = ?",
                (tokens, api_key_id),
            )
        return len(rows)

    count = await db.execute_write(reclaim)
    if count:
        log.warning("released %d stale quota reservations left by a process that stopped", count)
    return count
