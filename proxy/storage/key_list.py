"""The API key list at scale: search, state filter, sort and keyset paging (never OFFSET).

A page is the keys after a cursor, the sort value and id of the last key of the previous page, in
the sort's order with ``id`` breaking ties, so every key appears on exactly one page however many
keys are created or revoked between pages. The cursor is opaque to clients (base64 JSON). The way
back (``before``, the first key of the next page) flips the comparison and the order, then reverses
the rows; a way back that reaches the start is the first page, whole.

==========  ======================================  ==========
sort        order                                   index
==========  ======================================  ==========
created     newest first                            ``api_keys_created``
name        A to Z, case-insensitive                ``api_keys_name``
last_used   most recently used first (never: last)  none (*)
tokens      most tokens used (all time) first       none (*)
==========  ======================================  ==========

(*) Every request updates these columns: an index would cost each ledger write, and the key table
is small enough (thousands of rows) to sort on the fly.

States: ``revoked``; ``disabled`` (not revoked; until enabled); ``expired`` (neither, past its
expiry); ``exhausted`` (none of these, and its token limit reached in its current budget period, as
:meth:`ApiKey.quota_used` counts); ``active`` (none of these). A bad parameter raises :class:`FilterError` naming it.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import time
from dataclasses import dataclass, replace
from typing import Any

from proxy.storage.api_keys import KEY_COLUMNS, ApiKey
from proxy.storage.bounds import check_text
from proxy.storage.budget import PERIODS, period_bounds
from proxy.storage.database import Database
from proxy.storage.errors import ValidationError
from proxy.storage.request_log import PAGE_SIZE, FilterError, page_size

STATES = ("active", "revoked", "disabled", "expired", "exhausted")
SORTS = {  # name: (SQL expression, descending)
    "created": ("created_at", True),
    "name": ("name COLLATE NOCASE", False),
    "last_used": ("COALESCE(last_request_at, 0)", True),
    "tokens": ("tokens_used", True),
}
MAX_SEARCH = 200

_LIVE = "revoked_at IS NULL AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > :now)"
_EXHAUSTED = (
    "token_limit IS NOT NULL AND (budget_period IS NULL AND tokens_used >= token_limit"
    + "".join(
        f" OR budget_period = '{p}' AND period_start = :{p} AND period_tokens_used >= token_limit" for p in PERIODS
    )
    + ")"
)
_STATE_SQL = {
    "revoked": "revoked_at IS NOT NULL",
    "disabled": "revoked_at IS NULL AND disabled_at IS NOT NULL",
    "expired": "revoked_at IS NULL AND disabled_at IS NULL AND expires_at IS NOT NULL AND expires_at <= :now",
    "exhausted": f"{_LIVE} AND {_EXHAUSTED}",
    "active": f"{_LIVE} AND NOT ({_EXHAUSTED})",
}


@dataclass(frozen=True)
class KeyQuery:
    """What the key list shows: a search text, a state, a sort, where the page starts, its size."""

    search: str | None = None
    state: str | None = None
    sort: str = "created"
    after: tuple[Any, int] | None = None
    limit: int = PAGE_SIZE
    before: tuple[Any, int] | None = None  # the way back: the keys just before this cursor

    def params(self) -> dict[str, str]:
        """The query's parameters without the cursor (for links that keep the filter and the page size)."""
        shown = {"q": self.search or "", "state": self.state or "", "sort": self.sort}
        if self.limit != PAGE_SIZE:
            shown["limit"] = str(self.limit)
        return {k: v for k, v in shown.items() if v}


@dataclass(frozen=True)
class KeyPage:
    keys: list[ApiKey]
    next_cursor: str | None  # ``after`` of the next page; None: this is the last page
    previous_cursor: str | None = None  # ``before`` of the previous page; None: this is the first page


def key_query(query: Any) -> KeyQuery:
    """The parameters ``q``, ``state``, ``sort``, ``after`` or ``before``, and ``limit`` of ``query`` (a mapping)."""
    search = str(query.get("q", "")).strip()
    try:
        text = check_text("q", search, max_length=MAX_SEARCH) if search else None
    except ValidationError as exc:
        raise FilterError("q", str(exc)) from None
    state = str(query.get("state", "")).strip() or None
    if state is not None and state not in STATES:
        raise FilterError("state", f"must be one of {', '.join(STATES)}")
    sort = str(query.get("sort", "")).strip() or "created"
    if sort not in SORTS:
        raise FilterError("sort", f"must be one of {', '.join(SORTS)}")
    after, before = (str(query.get(name, "")).strip() for name in ("after", "before"))
    if after and before:
        raise FilterError("before", "give after or before, not both")
    return KeyQuery(
        text,
        state,
        sort,
        after=_parse_cursor(after, sort, "after") if after else None,
        limit=page_size(query),
        before=_parse_cursor(before, sort, "before") if before else None,
    )


def _parse_cursor(text: str, sort: str, field: str) -> tuple[Any, int]:
    try:
        value, key_id = json.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise FilterError(field, "not a page cursor (use the links of the page)") from None
    wanted = str if sort == "name" else (int, float)
    if not isinstance(key_id, int) or isinstance(value, bool) or not isinstance(value, wanted):
        raise FilterError(field, "not a cursor of this sort (use the links of the page)")
    return value, key_id


def _cursor(key: ApiKey, sort: str) -> str:
    value = {"created": key.created_at, "name": key.name, "tokens": key.tokens_used}.get(sort)
    if sort == "last_used":
        value = key.last_request_at or 0
    return base64.urlsafe_b64encode(json.dumps([value, key.id]).encode()).decode("ascii")


def _where(q: KeyQuery, now: float) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {"now": now, **{p: period_bounds(p, now)[0] for p in PERIODS}}
    conditions = ["1"]
    if q.search:
        plain = q.search.lstrip("…").lstrip(".")
        escaped = plain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.update(like=f"%{escaped}%", exact=plain)
        conditions.append("(name LIKE :like ESCAPE '\\' OR public_id = :exact OR last_four = :exact)")
    if q.state:
        conditions.append(f"({_STATE_SQL[q.state]})")
    cursor = q.after if q.after is not None else q.before
    if cursor is not None:
        expr, descending = SORTS[q.sort]
        params.update(value=cursor[0], id=cursor[1])
        smaller = descending == (q.after is not None)  # onward in a descending sort, back in an ascending one
        conditions.append(f"({expr}, id) {'<' if smaller else '>'} (:value, :id)")
    return " AND ".join(conditions), params


async def read_key_page(db: Database, q: KeyQuery, now: float | None = None) -> KeyPage:
    """Up to ``q.limit`` keys of the query, in its sort, after (or just before) its cursor."""
    now = time.time() if now is None else now
    where, params = _where(q, now)
    expr, descending = SORTS[q.sort]
    back = q.before is not None
    order = "DESC" if descending != back else "ASC"  # the way back reads in the opposite order
    sql = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE {where} ORDER BY {expr} {order}, id {order} LIMIT :limit"

    def read(conn: sqlite3.Connection) -> list[ApiKey]:
        return [ApiKey.from_row(row) for row in conn.execute(sql, {**params, "limit": q.limit + 1})]

    keys = await db.execute_read(read)
    more = len(keys) > q.limit
    keys = keys[: q.limit]
    if back:
        if not more:  # nothing before these: the first page, whole
            return await read_key_page(db, replace(q, before=None), now)
        keys.reverse()
        return KeyPage(keys, _cursor(keys[-1], q.sort), _cursor(keys[0], q.sort))
    previous = _cursor(keys[0], q.sort) if q.after is not None and keys else None
    return KeyPage(keys, _cursor(keys[-1], q.sort) if more else None, previous)
