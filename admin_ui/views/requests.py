"""The Requests page: the request log (every ledger row, newest first, filtered, keyset pages) and a
row's detail. The first page an admin opens when a user says "it failed". Viewers may read it."""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key
from admin_ui.filters import parsed
from admin_ui.views.keys import repository
from proxy.storage.request_log import (
    SCAN_LIMIT,
    STATUS_CLASSES,
    FilterError,
    RequestFilter,
    RequestPage,
    request_detail,
    request_page,
)

routes = web.RouteTableDef()


@routes.get("/requests")
async def requests_page(request: web.Request) -> web.Response:
    try:
        q = parsed(request.query)
    except FilterError as exc:
        return await _render(request, RequestFilter(), RequestPage([], None), dict(request.query), str(exc), 400)
    page = await request_page(request.app[db_key], q.flt, q.before, q.limit, after=q.after)
    return await _render(request, q.flt, page, q.flt.query())


async def _render(
    request: web.Request,
    flt: RequestFilter,
    page: RequestPage,
    shown: dict[str, str],
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    query = flt.query()
    limit = request.query.get("limit", "")
    if limit and not error:
        query["limit"] = limit
    context = {
        "flt": flt,
        "shown": shown,
        "page": page,
        "keys": await repository(request).list_keys(),
        "classes": STATUS_CLASSES,
        "query": urlencode(query),
        "next": urlencode({**query, "before": str(page.next_cursor)}) if page.next_cursor else None,
        "previous": urlencode({**query, "after": str(page.previous_cursor)}) if page.previous_cursor else None,
        "paged": bool(request.query.get("before") or request.query.get("after")),
        "error": error,
        "scan_limit": SCAN_LIMIT,
    }
    return aiohttp_jinja2.render_template("requests.html", request, context, status=status)


@routes.get(r"/requests/{row_id:\d{1,18}}")
async def request_page_detail(request: web.Request) -> web.Response:
    row = await request_detail(request.app[db_key], int(request.match_info["row_id"]))
    if row is None:
        raise web.HTTPNotFound(text="there is no request with this id (the ledger's retention may have removed it)")
    return aiohttp_jinja2.render_template("request.html", request, {"row": row})
