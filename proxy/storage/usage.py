"""The usage ledger and the token quota, which commit together.

Quota: admission reserves the request's worst case (prompt + max_tokens) with a read and a write
on the single writer inside one ``BEGIN IMMEDIATE`` transaction, so neither concurrent requests in
one process nor several processes sharing the file can overshoot the limit. When less than that is
left but at least the prompt and one token fit, the reservation is capped at what is left and the
generation shortened to match (:attr:`Reservation.tokens`): a budget is usable to its end. Each
reservation is also a ``quota_reservations`` row.

Ledger: :func:`record_usage` writes one ``token_usage_events`` row, deletes the request's
reservation and moves its real count into the key's counters (tokens used, request count, last
request time, per-endpoint counts) in one transaction, shared with whatever else the group-commit
writer had queued. It returns only once that transaction committed, so a response that awaits it
before finishing is never delivered without its usage on disk.

Rollups: the same transaction adds the row to its ``usage_daily`` rollup (UTC day, key, model,
endpoint, status class) and to its ``usage_hourly`` one (UTC hour, key, model, with a latency
histogram: ``proxy.storage.hourly``), one UPSERT each, so the usage pages and charts read rollups,
never the raw ledger.

Budget periods (``proxy.storage.budget``): a key with a ``budget_period`` is checked against its
period counter, which :func:`reserve_on` zeroes lazily when the period has turned; a reservation
remembers its period, and settles into the period counter only while that period lasts.

Reservations left by a process that died are reclaimed by :func:`reclaim_stale_reservations`, at
start-up and then every minute by the proxy (``proxy.app``): at once when their owner process is
gone (``proxy.storage.owner``: a restart frees what the requests it cut held), and in any case
past an age bound above the longest request.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import timezone
from zoneinfo import ZoneInfo

from proxy.storage.budget import format_reset, period_bounds
from proxy.storage.database import Database
from proxy.storage.errors import KeyNotFoundError, ValidationError
from proxy.storage.hourly import add_to_hourly_on
from proxy.storage.owner import gone_owners

_EVENT_COLUMNS = (
    "request_id",
    "api_key_id",
    "model",
    "endpoint",
    "prompt_tokens",
    "completion_tokens",
    "runtime_prompt_tokens",
    "runtime_completion_tokens",
    "status",
    "latency_ms",
    "ttft_ms",
    "streamed",
    "client_disconnected",
    "client_request_id",
    "audio_seconds",
    "created_at",
)
_INSERT_EVENT = (
    f"INSERT INTO token_usage_events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _EVENT_COLUMNS)}) RETURNING id"
)
_SETTLE_KEY = (
    "UPDATE api_keys SET tokens_used = tokens_used + :tokens, request_count = request_count + 1, "
    "period_tokens_used = period_tokens_used + CASE WHEN period_start IS :period THEN :tokens ELSE 0 END, "
    "last_request_at = :now, endpoint_counts = json_set(endpoint_counts, :path, "
    "COALESCE(json_extract(endpoint_counts, :path), 0) + 1) WHERE id = :key"
)
_ROLLUP = (
    "INSERT INTO usage_daily (day, api_key_id, model, endpoint, status_class, requests, prompt_tokens, "
    "completion_tokens, last_request_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?) "
    "ON CONFLICT DO UPDATE SET requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens, "
    "last_request_at = MAX(last_request_at, excluded.last_request_at)"
)
_PERIOD_RESERVED = "SELECT COALESCE(SUM(tokens), 0) FROM quota_reservations WHERE api_key_id = ? AND period_start = ?"
Zone = ZoneInfo | timezone

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsageEvent:
    """What one request used. Token counts are cl100k_base (the billing unit); the runtime's own
    exact counts sit beside them. ``status`` is the HTTP status the client got."""

    request_id: str
    api_key_id: int | None
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    status: int
    runtime_prompt_tokens: int | None = None
    runtime_completion_tokens: int | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    streamed: bool = False
    client_disconnected: bool = False
    client_request_id: str | None = None
    audio_seconds: float | None = None  # a transcription's audio duration
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValidationError("a usage event needs a request id")
        if self.prompt_tokens < 0 or self.completion_tokens < 0:
            raise ValidationError("token counts cannot be negative")
        if '"' in self.endpoint or "\\" in self.endpoint:
            raise ValidationError("an endpoint name cannot contain quotes or backslashes")

    @property
    def billed_tokens(self) -> int:
        """The tokens charged to the key's quota."""
        return self.prompt_tokens + self.completion_tokens


async def record_usage(db: Database, event: UsageEvent, reservation: Reservation | None = None) -> int:
    """Write ``event``, settle its reservation and counters; the event's row id once committed."""
    return await db.execute_write(lambda conn: record_usage_on(conn, event, reservation))


def record_usage_on(conn: sqlite3.Connection, event: UsageEvent, reservation: Reservation | None = None) -> int:
    """:func:`record_usage` on a connection already inside a write transaction."""
    (event_id,) = conn.execute(_INSERT_EVENT, {c: getattr(event, c) for c in _EVENT_COLUMNS}).fetchone()
    if reservation is not None:
        release_on(conn, reservation)
    if event.api_key_id is not None:
        conn.execute(
            _SETTLE_KEY,
            {
                "tokens": event.billed_tokens,
                "now": event.created_at,
                "path": f'$."{event.endpoint}"',
                "key": event.api_key_id,
                "period": None if reservation is None else reservation.period_start,
            },
        )
    conn.execute(
        _ROLLUP,
        (
            time.strftime("%Y-%m-%d", time.gmtime(event.created_at)),
            event.api_key_id or 0,
            event.model,
            event.endpoint,
            f"{event.status // 100}xx",
            event.prompt_tokens,
            event.completion_tokens,
            event.created_at,
        ),
    )
    add_to_hourly_on(conn, event)
    return int(event_id)


@dataclass(frozen=True)
class Reservation:
    """Tokens held for one admitted request until it settles."""

    id: int
    api_key_id: int
    tokens: int
    created_at: float
    period_start: float | None = None


@dataclass(frozen=True)
class QuotaExceeded:
    """Admission refused: the request's tokens do not fit under the key's limit."""

    api_key_id: int
    requested: int
    token_limit: int
    tokens_used: int
    tokens_reserved: int
    period: str | None = None
    resets_at: float | None = None
    zone: Zone = timezone.utc

    @property
    def remaining(self) -> int:
        return max(0, self.token_limit - self.tokens_used - self.tokens_reserved)

    @property
    def message(self) -> str:
        text = (
            f"this request needs up to {self.requested} tokens but the key has {self.remaining} "
            f"left of its {self.token_limit}-token quota"
        )
        if self.period is not None and self.resets_at is not None:
            text += f" for this {self.period} period; the budget resets at {format_reset(self.resets_at, self.zone)}"
        return text


async def reserve(
    db: Database,
    api_key_id: int,
    n_tokens: int,
    minimum: int | None = None,
    *,
    now: float | None = None,
    zone: Zone = timezone.utc,
) -> Reservation | QuotaExceeded:
    """Reserve ``n_tokens`` for a request of this key, or say why not.

    With ``minimum``, a key with fewer than ``n_tokens`` but at least ``minimum`` left gets a
    reservation of what it has left (``Reservation.tokens`` says how many). ``now`` (default: the
    clock) decides the budget period; ``zone`` is the time zone periods are aligned in.
    """
    if n_tokens < 0 or (minimum is not None and not 0 <= minimum <= n_tokens):
        raise ValidationError("cannot reserve a negative number of tokens, or a minimum above the maximum")
    when, owner = time.time() if now is None else now, db.reservation_owner
    return await db.execute_write(lambda conn: reserve_on(conn, api_key_id, n_tokens, when, minimum, zone, owner))


def reserve_on(
    conn: sqlite3.Connection,
    api_key_id: int,
    n_tokens: int,
    now: float,
    minimum: int | None = None,
    zone: Zone = timezone.utc,
    owner: str | None = None,
) -> Reservation | QuotaExceeded:
    """:func:`reserve` on a connection already inside a write transaction (so read-then-write is atomic).

    A key with a budget period counts ``period_tokens_used`` instead of ``tokens_used``, zeroed here
    first when the period has turned. Reservations still held from the previous period stay in
    ``tokens_reserved`` and settle into the old period; the new period counts only its own
    reservations (an indexed sum over ``quota_reservations``), so neither period can overshoot.
    """
    row = conn.execute(
        "SELECT token_limit, tokens_used, tokens_reserved, budget_period, period_start, period_tokens_used "
        "FROM api_keys WHERE id = ?",
        (api_key_id,),
    ).fetchone()
    if row is None:
        raise KeyNotFoundError(f"no API key {api_key_id}")
    limit, used, reserved, period, start, period_used = row
    end = None
    if period is not None:
        current, end = period_bounds(period, now, zone)
        if start is None or current > start:  # the period turned (never back: a late clock joins the newer one)
            conn.execute(
                "UPDATE api_keys SET period_start = ?, period_tokens_used = 0 WHERE id = ?", (current, api_key_id)
            )
            start, period_used = current, 0
        elif current < start:
            end = period_bounds(period, start, zone)[1]
        used = period_used
        reserved = conn.execute(_PERIOD_RESERVED, (api_key_id, start)).fetchone()[0]
    least = n_tokens if minimum is None else minimum
    granted = n_tokens if limit is None else min(n_tokens, limit - used - reserved)
    if limit is not None and granted < least:
        return QuotaExceeded(api_key_id, least, limit, used, reserved, period, end, zone)
    conn.execute("UPDATE api_keys SET tokens_reserved = tokens_reserved + ? WHERE id = ?", (granted, api_key_id))
    (reservation_id,) = conn.execute(
        "INSERT INTO quota_reservations (api_key_id, tokens, created_at, period_start, owner) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        (api_key_id, granted, now, start, owner),
    ).fetchone()
    return Reservation(reservation_id, api_key_id, granted, now, start)


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
    """Release the reservations whose owner process is gone, and any older than ``older_than``
    seconds (no owner, or a leak); the count.

    Call it at start-up and periodically with a bound above the longest possible request (the
    request timeout plus a margin), so live requests are never touched.
    """
    cutoff = time.time() - older_than
    owners = await db.execute_read(
        lambda conn: [
            r[0] for r in conn.execute("SELECT DISTINCT owner FROM quota_reservations WHERE owner IS NOT NULL")
        ]
    )
    gone = gone_owners(db.path, (o for o in owners if o != db.reservation_owner))

    def reclaim(conn: sqlite3.Connection) -> int:
        rows = conn.execute(
            "DELETE FROM quota_reservations WHERE created_at < ? "
            "OR owner IN (SELECT value FROM json_each(?)) RETURNING api_key_id, tokens",
            (cutoff, json.dumps(gone)),
        ).fetchall()
        for api_key_id, tokens in rows:
            conn.execute(
                "UPDATE api_keys SET tokens_reserved = MAX(0, tokens_reserved - ?) WHERE id = ?",
                (tokens, api_key_id),
            )
        return len(rows)

    count = await db.execute_write(reclaim)
    if count:
        log.warning("released %d quota reservations left by a process that stopped", count)
    return count
