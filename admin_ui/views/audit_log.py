"""The audit log page, filterable by actor, action and day."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key
from proxy.storage.audit import AuditEntry, list_audit
from proxy.storage.bounds import parse_int
from proxy.storage.errors import ValidationError

routes = web.RouteTableDef()
PAGE = 100


def _day(text: str, end: bool = False) -> float | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{text[:20]!r} is not a day (YYYY-MM-DD)", field="until" if end else "since") from None
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
    return start + 86400 if end else start


def _page(query: Any) -> int:
    return parse_int("page", str(query.get("page", "")), low=0, high=10**9) or 0


async def audit_entries(request: web.Request) -> list[AuditEntry]:
    q = request.query
    page = _page(q)
    return await list_audit(
        request.app[db_key],
        actor=q.get("actor") or None,
        action=q.get("action") or None,
        since=_day(q.get("since", "")),
        until=_day(q.get("until", ""), end=True),
        limit=PAGE,
        offset=page * PAGE,
    )


@routes.get("/audit")
async def audit_page(request: web.Request) -> web.Response:
    entries = await audit_entries(request)
    page = _page(request.query)
    context: dict[str, Any] = {"entries": entries, "q": request.query, "page": page, "more": len(entries) == PAGE}
    return aiohttp_jinja2.render_template("audit.html", request, context)
