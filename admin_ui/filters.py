"""Query-string filters that a page and its JSON twin share: usage (``?since=&until=&key=&model=``),
the audit log (``?actor=&action=&since=&until=&page=``) and the request log (``proxy.storage.request_log``
plus ``before``/``after``). A bad value is an error naming its parameter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from aiohttp import web

from admin_ui.appkeys import db_key
from proxy.storage.audit import AuditEntry, list_audit
from proxy.storage.bounds import parse_int
from proxy.storage.errors import ValidationError
from proxy.storage.request_log import Cursor, FilterError, RequestFilter, page_size, request_filter
from proxy.storage.usage_report import UsageFilter

DEFAULT_DAYS = 30
AUDIT_PAGE = 100


def usage_filter(query: Any) -> UsageFilter:
    """The filter from ``?since=&until=&key=&model=`` (default: the last 30 days)."""
    base = UsageFilter.last_days(DEFAULT_DAYS)
    return UsageFilter(
        since=str(query.get("since") or base.since),
        until=str(query.get("until") or base.until),
        api_key_id=parse_int("key", str(query.get("key", "")), low=1),
        model=str(query.get("model", "")).strip() or None,
    )


def audit_day(text: str, end: bool = False) -> float | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{text[:20]!r} is not a day (YYYY-MM-DD)", field="until" if end else "since") from None
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
    return start + 86400 if end else start


def audit_page_number(query: Any) -> int:
    return parse_int("page", str(query.get("page", "")), low=0, high=10**9) or 0


async def audit_entries(request: web.Request) -> list[AuditEntry]:
    q = request.query
    return await list_audit(
        request.app[db_key],
        actor=q.get("actor") or None,
        action=q.get("action") or None,
        since=audit_day(q.get("since", "")),
        until=audit_day(q.get("until", ""), end=True),
        limit=AUDIT_PAGE,
        offset=audit_page_number(q) * AUDIT_PAGE,
    )


@dataclass(frozen=True)
class Query:
    """A request-log query: the filter, where the page starts (``before`` or ``after``), its size."""

    flt: RequestFilter
    before: Cursor | None
    after: Cursor | None
    limit: int


def parsed(query: Any) -> Query:
    """The query's filter, cursor and page size; :class:`FilterError` names a bad field."""
    before, after = (str(query.get(name, "")).strip() for name in ("before", "after"))
    if before and after:
        raise FilterError("after", "give before or after, not both")
    return Query(
        request_filter(query),
        Cursor.parse(before) if before else None,
        Cursor.parse(after, "after") if after else None,
        page_size(query),
    )
