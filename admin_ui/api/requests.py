"""``/admin/api/requests``: the request log for scripts (one ledger row per request), and its CSV.

Every handler reads as auth -> parse -> query ``proxy.storage.request_log`` -> respond. Filters are
query parameters (``key``, ``model``, ``status`` = 2xx/4xx/5xx, ``endpoint``, ``since``, ``until``,
``limit``); paging is by keyset: a page's ``next`` is the ``before`` of the older page, its
``previous`` the ``after`` of the newer one. A bad value
is a 400 whose ``param`` names it. Anyone who may read the console may read the log.

=======  ==================================  ===========================================
GET      /admin/api/requests                 a page, newest first (``{"requests", "next", "previous"}``)
GET      /admin/api/requests.csv             every row of the filter, newest first, streamed
GET      /admin/api/requests/{id}            one row
=======  ==================================  ===========================================
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from admin_ui.api.common import Auth, error, guard, install_auth
from admin_ui.export import csv_cell
from admin_ui.filters import Query, parsed
from proxy.storage.database import Database
from proxy.storage.request_log import (
    FilterError,
    iter_requests,
    request_detail,
    request_page,
)

CSV_MAX_ROWS = 100_000  # one export at most; older rows: export again with until= the last row's time
CSV_COLUMNS = (
    "created_at",
    "id",
    "request_id",
    "client_request_id",
    "api_key_id",
    "key_name",
    "model",
    "endpoint",
    "status",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "runtime_prompt_tokens",
    "runtime_completion_tokens",
    "streamed",
    "client_disconnected",
    "audio_seconds",
)
_TEXT = ("request_id", "client_request_id", "key_name", "model", "endpoint")

requests_db_key: web.AppKey[Callable[[], Database]] = web.AppKey("admin_requests_db")


def setup_request_routes(
    app: web.Application, db: Callable[[], Database], *, auth: Auth, prefix: str = "/admin/api"
) -> None:
    """Add the routes under ``prefix``; ``db`` gives the database once the app has started."""
    app[requests_db_key] = db
    install_auth(app, auth)
    base = f"{prefix}/requests"
    app.router.add_get(base, list_requests)
    app.router.add_get(f"{base}.csv", export_requests)
    app.router.add_get(base + r"/{id}", get_request)


def _parsed(request: web.Request) -> Query:
    try:
        return parsed(request.query)
    except FilterError as exc:
        raise error(400, str(exc), "invalid_request", exc.field) from None


async def list_requests(request: web.Request) -> web.Response:
    await guard(request)
    q = _parsed(request)
    page = await request_page(request.app[requests_db_key](), q.flt, q.before, q.limit, after=q.after)
    return web.json_response(
        {
            "filter": q.flt.query(),
            "requests": page.rows,
            "next": str(page.next_cursor) if page.next_cursor is not None else None,
            "previous": str(page.previous_cursor) if page.previous_cursor is not None else None,
            "scan_limited": page.scan_limited,
        }
    )


async def get_request(request: web.Request) -> web.Response:
    await guard(request)
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise error(400, "id: a request's row id is a number", "invalid_request", "id")
    row = await request_detail(request.app[requests_db_key](), int(text))
    if row is None:
        raise error(404, f"no request with id {text}", "not_found")
    return web.json_response({"request": row})


async def export_requests(request: web.Request) -> web.StreamResponse:
    """The filtered rows as CSV, newest first, at most :data:`CSV_MAX_ROWS`, written as they are read."""
    await guard(request)
    flt = _parsed(request).flt
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="requests.csv"',
            "X-Row-Limit": str(CSV_MAX_ROWS),
        }
    )
    await response.prepare(request)
    await response.write((",".join(CSV_COLUMNS) + "\r\n").encode())
    async for rows in iter_requests(request.app[requests_db_key](), flt, CSV_MAX_ROWS):
        await response.write(csv_lines(rows).encode())
    await response.write_eof()
    return response


def csv_lines(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow(
            [csv_cell(str(row[c])) if c in _TEXT and row[c] is not None else _plain(row[c]) for c in CSV_COLUMNS]
        )
    return out.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value > 1e9:  # created_at
        return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="milliseconds")
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    return value
