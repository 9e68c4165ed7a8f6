"""The audit log page, filterable by actor, action and day (``admin_ui.filters``)."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.filters import AUDIT_PAGE, audit_entries, audit_page_number

routes = web.RouteTableDef()


@routes.get("/audit")
async def audit_page(request: web.Request) -> web.Response:
    entries = await audit_entries(request)
    page = audit_page_number(request.query)
    more = len(entries) == AUDIT_PAGE
    context: dict[str, Any] = {"entries": entries, "q": request.query, "page": page, "more": more}
    return aiohttp_jinja2.render_template("audit.html", request, context)
