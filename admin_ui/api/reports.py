"""Reading the console's records: ``/admin/api/usage`` (from the daily rollups, filtered as the usage
page is), ``/admin/api/usage/series`` (the charts' points, from the hourly rollups), ``/admin/usage``
(per key, the original middleware's figures) and ``/admin/api/audit`` (the audit log, filtered as its
page is: ``admin_ui.filters``)."""

from __future__ import annotations

from aiohttp import web

from admin_ui.actions import key_repository
from admin_ui.api.common import Auth, guard, install_auth
from admin_ui.appkeys import reports_key, series_key
from admin_ui.charts.usage import bucket_of, read_series
from admin_ui.filters import audit_entries, usage_filter


def setup_report_routes(
    app: web.Application, *, auth: Auth, prefix: str = "/admin/api", per_key: str = "/admin/usage"
) -> None:
    """Add the routes under ``prefix``, and the per-key figures at ``per_key``."""
    install_auth(app, auth)
    app.router.add_get(f"{prefix}/usage", usage)
    app.router.add_get(f"{prefix}/usage/series", usage_series)
    app.router.add_get(per_key, usage_per_key)
    app.router.add_get(f"{prefix}/audit", audit)


async def usage(request: web.Request) -> web.Response:
    await guard(request)
    flt = usage_filter(request.query)
    report = await request.app[reports_key].report(flt)
    return web.json_response({"filter": flt.__dict__, **report.as_json()})


async def usage_series(request: web.Request) -> web.Response:
    """The charts' points (issue 19): per hour or day, requests, errors, tokens, p50/p95 latency."""
    await guard(request)
    flt, bucket = usage_filter(request.query), bucket_of(request.query)
    points, cut = await read_series(request.app[series_key], flt, bucket)
    body = {"filter": flt.__dict__, "bucket": bucket, "cut": cut, "points": [p.as_json() for p in points]}
    return web.json_response(body)


async def usage_per_key(request: web.Request) -> web.Response:
    """Per key: requests, tokens, last request, requests per endpoint."""
    await guard(request)
    keys = await key_repository(request).list_keys()
    rows = [
        {
            "id": k.id,
            "name": k.name,
            "last_four": k.last_four,
            "total_requests": k.request_count,
            "total_tokens": k.tokens_used,
            "last_request_at": k.last_request_at,
            "requests_per_endpoint": dict(k.endpoint_counts),
        }
        for k in keys
    ]
    return web.json_response({"keys": rows})


async def audit(request: web.Request) -> web.Response:
    await guard(request)
    entries = await audit_entries(request)
    return web.json_response({"entries": [e.as_json() for e in entries]})
