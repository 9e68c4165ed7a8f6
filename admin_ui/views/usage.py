"""The usage page (charts and tables from the daily rollups), its CSV export, and its filters."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import reports_key
from admin_ui.export import csv_cell
from admin_ui.filters import usage_filter
from proxy.storage.usage_report import UsageReport

routes = web.RouteTableDef()


def bars(rows: list[dict[str, Any]], label: str, value: str, width: int = 600, height: int = 120) -> dict[str, Any]:
    """Geometry of an SVG bar chart (drawn by the template: no script, no inline style)."""
    top = max([r[value] for r in rows] + [1])
    step = width / max(len(rows), 1)
    items = []
    for i, row in enumerate(rows):
        h = round(height * row[value] / top, 1)
        items.append(
            {
                "x": round(i * step, 1),
                "y": round(height - h, 1),
                "w": max(round(step - 2, 1), 1),
                "h": h,
                "label": row[label],
                "value": row[value],
            }
        )
    return {"width": width, "height": height, "bars": items, "max": top}


MAX_CHART_DAYS = 400  # a longer range is drawn with its days that had traffic only


def every_day(rows: list[dict[str, Any]], since: str, until: str) -> list[dict[str, Any]]:
    """One row per day from ``since`` to ``until``, zeros for days without traffic: a quiet day
    shows as a gap in the chart, not as the next busy day moved up beside the last one."""
    first, last = date.fromisoformat(since), date.fromisoformat(until)
    if (last - first).days >= MAX_CHART_DAYS:
        return rows
    have = {row["day"]: row for row in rows}
    days = (first + timedelta(days=i) for i in range((last - first).days + 1))
    return [have.get(d.isoformat()) or {"day": d.isoformat(), "total_tokens": 0, "requests": 0} for d in days]


@routes.get("/reports")
async def usage_page(request: web.Request) -> web.Response:
    flt = usage_filter(request.query)
    report = await request.app[reports_key].report(flt)
    days = every_day(report.by_day, flt.since, flt.until)
    context = {
        "flt": flt,
        "report": report,
        "tokens_chart": bars(days, "day", "total_tokens"),
        "requests_chart": bars(days, "day", "requests"),
        "query": request.query_string,
    }
    return aiohttp_jinja2.render_template("usage.html", request, context)


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
