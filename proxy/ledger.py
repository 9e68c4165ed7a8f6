"""The usage ledger: one ``token_usage_events`` row per request, settled with the key's counters.

:func:`record_usage` goes through the database's group-commit writer: the event row, the
release of the request's quota reservation and the key's counters (tokens used, request count,
last request time, per-endpoint counts) change in one transaction, shared with whatever else was
queued at that moment. It returns only once that transaction committed, so a response that awaits
it before finishing is never delivered without its usage on disk.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field

from proxy.db import Database
from proxy.errors import ValidationError
from proxy.quota import Reservation, release_on

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
    "created_at",
)
_INSERT_EVENT = (
    f"INSERT INTO token_usage_events ({', '.join(_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c for c in _EVENT_COLUMNS)}) RETURNING id"
)
_SETTLE_KEY = (
    "UPDATE api_keys SET tokens_used = tokens_used + :tokens, request_count = request_count + 1, "
    "last_request_at = :now, endpoint_counts = json_set(endpoint_counts, :path, "
    "COALESCE(json_extract(endpoint_counts, :path), 0) + 1) WHERE id = :key"
)


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
            },
        )
    return int(event_id)
