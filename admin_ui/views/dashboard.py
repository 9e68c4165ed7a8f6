"""The dashboard: traffic today and over 7 days, requests per minute, running models, the machine.

The page renders everything once (it reads fine without JavaScript); ``/admin/api/monitor``
returns the live part as JSON, which ``static/admin.js`` polls every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key, monitor_key, reports_key, runtime_key
from proxy.storage.usage_report import UsageFilter, requests_per_minute

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
RUNTIME_TIMEOUT = 1.0


async def running_models(request: web.Request) -> dict[str, Any]:
    """The runtime's models with their state, or why they cannot be shown."""
    try:
        models = await asyncio.wait_for(request.app[runtime_key].models(), RUNTIME_TIMEOUT)
    except Exception as exc:  # any failure of the runtime is shown, not raised
        log.info("runtime unreachable for the dashboard: %s", exc)
        return {"models": [], "error": "the runtime is not reachable"}
    return {"models": [{"name": m.name, "state": m.state} for m in models], "error": None}


async def live(request: web.Request) -> dict[str, Any]:
    """The live part of the dashboard: machine, per-minute requests, models."""
    sample, rpm, models = await asyncio.gather(
        asyncio.to_thread(request.app[monitor_key].sample),
        requests_per_minute(request.app[db_key]),
        running_models(request),
    )
    return {"system": sample, "requests_per_minute": rpm, "runtime": models}


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    reports = request.app[reports_key]
    today, week, now = await asyncio.gather(
        reports.report(UsageFilter.last_days(1)),
        reports.report(UsageFilter.last_days(7)),
        live(request),
    )
    context = {"today": today.totals, "week": week.totals, "week_days": week.by_day, "live": now}
    return aiohttp_jinja2.render_template("dashboard.html", request, context)


@routes.get("/api/monitor")
async def monitor_json(request: web.Request) -> web.Response:
    return web.json_response(await live(request))
