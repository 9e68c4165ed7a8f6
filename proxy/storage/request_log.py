"""The request log: ledger rows (``token_usage_events``) one by one, newest first, filtered, paged by keyset.

A page is the rows before a cursor, the ``(created_at, id)`` of the last row of the previous page,
in ``created_at DESC, id DESC`` order; never OFFSET, so the thousandth page costs what the first
does. Each filter has an index whose last column is ``created_at`` (and, like every SQLite index,
the row id after it), so the page is read straight off one index range, in order:

=========================  =========================================================
no filter, time range      ``token_usage_events_created_at``
key                        ``token_usage_events_key_time``
key and status class       ``token_usage_events_key_class_time``
model                      ``token_usage_events_model_time``
status class               ``token_usage_events_class_time`` (on ``status / 100``)
endpoint                   ``token_usage_events_endpoint_time``
=========================  =========================================================

Several filters at once use one of them and check the rest row by row, at most :data:`SCAN_LIMIT`
rows per page (a short page then says so and continues where it stopped). The row carries what
the ledger stores: tokens (cl100k and the runtime's own), status, latency and time to first
token (ms), streamed, client disconnected, audio seconds, the request ids, and the key's name.
"""

from __future__ import annotations

import math
import re
import sqlite3
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from proxy.storage.database import Database
from proxy.storage.errors import ValidationError

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
SCAN_LIMIT = 5_000  # rows of an index range one page examines for the conditions no index serves
STATUS_CLASSES = ("2xx", "4xx", "5xx")
_COLUMNS = (
    "e.id, e.request_id, e.client_request_id, e.api_key_id, k.name AS key_name, k.last_four, e.model, "
    "e.endpoint, e.status, e.prompt_tokens, e.completion_tokens, e.runtime_prompt_tokens, "
    "e.runtime_completion_tokens, e.latency_ms, e.ttft_ms, e.streamed, e.client_disconnected, "
    "e.audio_seconds, e.created_at"
)
_FROM = "token_usage_events e LEFT JOIN api_keys k ON k.id = e.api_key_id"
_PROBE = "e.id, e.created_at, e.api_key_id, e.model, e.endpoint, e.status / 100"
_PROBED = {"api_key_id": 2, "model": 3, "endpoint": 4, "status_class": 5}
_CURSOR = re.compile(r"^(\d{1,12}(?:\.\d{1,17})?)_(\d{1,19})$")
_MAX_TEXT = 200
Clauses = tuple[list[str], list[Any]]


class FilterError(ValidationError):
    """A filter value that is not acceptable; ``field`` names the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the ``created_at`` and ``id`` of its last row (written ``<time>_<id>``)."""

    created_at: float
    id: int

    def __str__(self) -> str:
        return f"{self.created_at!r}_{self.id}"  # repr: the float exactly, or a tie could be skipped

    @classmethod
    def parse(cls, text: str, field: str = "before") -> Cursor:
        found = _CURSOR.match(text)
        if found is None or int(found.group(2)) >= 2**63:
            raise FilterError(field, "not a page cursor (use the next link of the previous page)")
        return cls(float(found.group(1)), int(found.group(2)))


@dataclass(frozen=True)
class RequestFilter:
    """What the log shows. Times are Unix seconds, ``since`` inclusive, ``until`` exclusive."""

    api_key_id: int | None = None
    model: str | None = None
    status_class: str | None = None
    endpoint: str | None = None
    since: float | None = None
    until: float | None = None

    def split(self) -> tuple[Clauses, list[tuple[str, Any]]]:
        """The conditions an index range serves (SQL: one equality filter, the time range), and the
        rest as ``(row field, value)`` pairs, checked row by row.

        The index: key and status class together (``token_usage_events_key_class_time``), else the
        key, a 4xx/5xx class (rare rows), the model, the endpoint, 2xx, in that order.
        """
        equal: list[tuple[str, Any, str, Any]] = []  # SQL, its value; the row's field, its value
        if self.api_key_id is not None:
            equal.append(("e.api_key_id = ?", self.api_key_id, "api_key_id", self.api_key_id))
        if self.status_class is not None:  # the indexes' expression
            equal.append(("e.status / 100 = ?", int(self.status_class[0]), "status_class", int(self.status_class[0])))
        if self.model is not None:
            equal.append(("e.model = ?", self.model, "model", self.model))
        if self.endpoint is not None:
            equal.append(("e.endpoint = ?", self.endpoint, "endpoint", self.endpoint))
        if self.status_class == "2xx" and len(equal) > 1 and self.api_key_id is None:
            equal.append(equal.pop(0))  # most rows are 2xx: any other filter narrows more
        driving = 2 if self.api_key_id is not None and self.status_class is not None else min(len(equal), 1)
        served = [e[0] for e in equal[:driving]], [e[1] for e in equal[:driving]]
        if self.since is not None:
            served[0].append("e.created_at >= ?")
            served[1].append(self.since)
        if self.until is not None:
            served[0].append("e.created_at < ?")
            served[1].append(self.until)
        return served, [(e[2], e[3]) for e in equal[driving:]]

    def query(self) -> dict[str, str]:
        """The filter as query parameters (for links to the next page or the CSV export)."""
        values = {
            "key": self.api_key_id,
            "model": self.model,
            "status": self.status_class,
            "endpoint": self.endpoint,
            "since": format_time(self.since),
            "until": format_time(self.until),
        }
        return {k: str(v) for k, v in values.items() if v is not None}


def request_filter(query: Any) -> RequestFilter:
    """The filter from query parameters ``key, model, status, endpoint, since, until``.

    Raises :class:`FilterError` naming the parameter for a value that is not acceptable.
    """
    key = _text(query, "key")
    if key is not None and not (key.isascii() and key.isdigit() and len(key) <= 18):
        raise FilterError("key", "must be a key id (a number)")
    status = _text(query, "status")
    if status is not None:
        status = status.lower()
        if status not in STATUS_CLASSES:
            raise FilterError("status", f"must be one of {', '.join(STATUS_CLASSES)}")
    flt = RequestFilter(
        api_key_id=int(key) if key is not None else None,
        model=_text(query, "model"),
        status_class=status,
        endpoint=_text(query, "endpoint"),
        since=parse_time(_text(query, "since"), "since"),
        until=parse_time(_text(query, "until"), "until"),
    )
    if flt.since is not None and flt.until is not None and flt.since >= flt.until:
        raise FilterError("until", "must be after since")
    return flt


def page_size(query: Any, default: int = PAGE_SIZE) -> int:
    text = _text(query, "limit")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and 1 <= int(text[:4]) <= MAX_PAGE_SIZE and len(text) <= 3):
        raise FilterError("limit", f"must be a number from 1 to {MAX_PAGE_SIZE}")
    return int(text)


def _text(query: Any, field: str) -> str | None:
    value = query.get(field)
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) > _MAX_TEXT:
        raise FilterError(field, f"is longer than {_MAX_TEXT} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise FilterError(field, "contains control or formatting characters")
    return text


def parse_time(text: str | None, field: str) -> float | None:
    """``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS]`` (UTC unless it says otherwise) or Unix seconds."""
    if text is None:
        return None
    try:
        if re.fullmatch(r"\d{1,11}(\.\d{1,9})?", text):
            value = float(text)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            value = moment.timestamp()
    except (ValueError, OverflowError):
        raise FilterError(field, "must be a time: YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC) or Unix seconds") from None
    if not math.isfinite(value) or not 0 <= value < 253402300800:  # before 10000-01-01
        raise FilterError(field, "is out of range")
    return value


def format_time(value: float | None) -> str | None:
    if value is None:
        return None
    moment = datetime.fromtimestamp(value, timezone.utc)
    if moment.microsecond:  # kept, so a link to the next page or the CSV has the very same filter
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return moment.strftime("%Y-%m-%dT%H:%M:%S" if moment.second else "%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class RequestPage:
    rows: list[dict[str, Any]]
    next_cursor: Cursor | None  # older rows: ``before``; None: this is the last page
    scan_limited: bool = False  # fewer rows than asked, yet more may match: follow the cursor onward
    previous_cursor: Cursor | None = None  # newer rows: ``after``; None: this is the first page


async def request_page(
    db: Database,
    flt: RequestFilter,
    before: Cursor | None = None,
    limit: int = PAGE_SIZE,
    scan_limit: int = SCAN_LIMIT,
    after: Cursor | None = None,
) -> RequestPage:
    """Up to ``limit`` rows of ``flt``, newest first: the newest, or those just older than ``before``,
    or (``after``, the way back) those just newer than ``after``.

    When ``flt`` has conditions no index serves, a page examines at most :data:`SCAN_LIMIT` rows of
    the index range; if they hold fewer than ``limit`` matches, the page is short and ``scan_limited``,
    and its cursor continues after the last row examined (so a rare combination costs bounded time
    per page, never a scan of the whole ledger).
    """
    back = after is not None
    at = after if after is not None else before
    rows, scanned_to = await db.execute_read(lambda conn: _page(conn, flt, at, limit + 1, scan_limit, back))
    more = len(rows) > limit
    rows = rows[:limit]
    onward = _cursor(rows[-1]) if more else scanned_to
    limited = scanned_to is not None and not more
    if after is not None:  # the way back: rows came oldest first
        rows.reverse()
        older = _cursor(rows[-1]) if rows else Cursor(after.created_at, after.id + 1)  # from ``after`` itself on
        return RequestPage(rows, older, limited, previous_cursor=onward)
    if before is None:
        return RequestPage(rows, onward, limited)
    newer = _cursor(rows[0]) if rows else Cursor(before.created_at, max(before.id - 1, 0))  # from ``before`` itself on
    return RequestPage(rows, onward, limited, previous_cursor=newer)


def _cursor(row: dict[str, Any]) -> Cursor:
    return Cursor(row["created_at"], row["id"])


async def request_detail(db: Database, row_id: int) -> dict[str, Any] | None:
    """One ledger row (with its key's name), or None."""
    sql = f"SELECT {_COLUMNS} FROM {_FROM} WHERE e.id = ?"
    row = await db.execute_read(lambda conn: conn.execute(sql, (row_id,)).fetchone())
    return _row(row) if row is not None else None


def _page(
    conn: sqlite3.Connection, flt: RequestFilter, at: Cursor | None, limit: int, scan_limit: int, back: bool
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """The matching rows past ``at`` (older; newer when ``back``, then oldest first), and where the
    scan stopped when it examined ``scan_limit`` rows first."""
    (served, params), rest = flt.split()
    if at is not None:
        # created_at <= ? bounds the index range; the OR sorts out rows of the very same time.
        past = ">" if back else "<"
        served.append(f"e.created_at {past}= ? AND (e.created_at {past} ? OR e.id {past} ?)")
        params += [at.created_at, at.created_at, at.id]
    where = f"WHERE {' AND '.join(served)}" if served else ""
    order = "ORDER BY e.created_at, e.id" if back else "ORDER BY e.created_at DESC, e.id DESC"
    sql = f"SELECT {_COLUMNS} FROM {_FROM} {where} {order} LIMIT ?"
    if not rest:
        return [_row(r) for r in conn.execute(sql, [*params, limit])], None
    probe = conn.cursor()
    probe.row_factory = None  # plain tuples: the rows that do not match cost no more than a look
    probe.execute(sql.replace(_COLUMNS, _PROBE).replace(_FROM, "token_usage_events e"), [*params, scan_limit])
    found: list[int] = []
    examined = 0
    last: tuple[Any, ...] | None = None
    for last in probe:  # in page order, stopped as soon as the page is full
        examined += 1
        if all(last[_PROBED[name]] == value for name, value in rest):
            found.append(last[0])
            if len(found) >= limit:
                break
    probe.close()
    ids = ", ".join("?" * len(found))
    full = f"SELECT {_COLUMNS} FROM {_FROM} WHERE e.id IN ({ids}) {order}"
    rows = [_row(r) for r in conn.execute(full, found)] if found else []
    if len(found) < limit and examined >= scan_limit and last is not None:
        return rows, Cursor(last[1], last[0])
    return rows, None


def _row(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    found = dict(row) if isinstance(row, sqlite3.Row) else {}
    found["streamed"] = bool(found.get("streamed"))
    found["client_disconnected"] = bool(found.get("client_disconnected"))
    found["status_class"] = f"{int(found['status']) // 100}xx"
    return found


async def iter_requests(
    db: Database, flt: RequestFilter, max_rows: int, batch: int = 1000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every row of ``flt``, newest first, in batches, at most ``max_rows`` (the CSV export); a page
    whose bounded scan found nothing yields nothing, and the export goes on past it."""
    before: Cursor | None = None
    left = max_rows
    while left > 0:
        page = await request_page(db, flt, before, min(batch, left))
        if page.rows:
            yield page.rows
        left -= len(page.rows)
        if page.next_cursor is None:
            return
        before = page.next_cursor
