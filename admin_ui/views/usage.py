"""The usage page (charts from the hourly rollup, tables from the daily ones), its CSV export, and its filters."""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import reports_key, series_key
from admin_ui.charts.usage import bucket_of, usage_charts
from admin_ui.export import csv_cell
from admin_ui.filters import usage_filter
from proxy.storage.usage_report import UsageReport

routes = web.RouteTableDef()


@routes.get("/reports")
async def usage_page(request: web.Request) -> web.Response:
    flt = usage_filter(request.query)
    bucket = bucket_of(request.query)
    report = await request.app[reports_key].report(flt)
    context = {
        "flt": flt,
        "report": report,
        "charts": await usage_charts(request.app[series_key], flt, bucket),
        "query": request.query_string,
        "switch": {b: _with(request.query, bucket=b) for b in ("day", "hour")},
    }
    return aiohttp_jinja2.render_template("usage.html", request, context)


def _with(query: Any, **changes: str) -> str:
    """The page's query string with ``changes`` (the hourly/daily switch keeps the filter)."""
    return urlencode({**{k: v for k, v in query.items() if v}, **changes})


@routes.get("/reports.csv")
async def usage_csv(request: web.Request) -> web.Response:
    report = await request.app[reports_key].report(usage_filter(request.query))
    return web.Response(
        text=to_csv(report),
        content_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
    )


def to_csv(report: UsageReport) -> str:
    """One row per key: the seed's figures (requests, tokens, last request, per endpoint)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "key_id",
            "key_name",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "last_request_at",
            "requests_per_endpoint",
        ]
    )
    for row in report.by_key:
        endpoints = ";".join(f"{k}={v}" for k, v in sorted(row["endpoints"].items()))
        name = csv_cell(row["key_name"] or "")
        writer.writerow(
            [
                row["api_key_id"],
                name,
                row["requests"],
                row["errors"],
                row["prompt_tokens"],
                row["completion_tokens"],
                row["total_tokens"],
                row["last_request_at"],
                endpoints,
            ]
        )
    return out.getvalue()
