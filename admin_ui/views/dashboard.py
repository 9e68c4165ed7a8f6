"""The dashboard: the last hour's traffic (success rate, latency and TTFT percentiles, tokens per
second, per model), today and the last 7 days, requests per minute, running models, the machine.

The page renders everything once (it reads fine without JavaScript). ``static/admin.js`` then
polls two JSON twins, both with the ``X-Console-Poll`` header so an open page does not keep an
idle session alive: ``/admin/api/monitor`` (the live part: machine, per-minute requests, models)
and ``/admin/api/dashboard`` (the cards' figures, :func:`traffic_figures`), which scripts can read
too. The last hour comes from the ledger's time index, today and the week from one range of the
daily rollups (``proxy.storage.traffic``): no figure scans the whole ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key, monitor_key, runtime_key
from proxy.storage.traffic import Traffic, days, last_hour, utc_days
from proxy.storage.usage_report import requests_per_minute

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


def _window(traffic: Traffic, by_model: bool) -> dict[str, Any]:
    """Whole days' figures: their totals with the success rate (and their models, most requests first)."""
    data = traffic.as_json()
    keep = ("since", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "success_rate")
    return {k: data[k] for k in keep + (("by_model",) if by_model else ())}


async def traffic_figures(request: web.Request) -> dict[str, Any]:
    """The cards: the last hour (ledger), today (UTC) with its models, and the last 7 days (rollups)."""
    db = request.app[db_key]
    hour, today, week = await asyncio.gather(last_hour(db), days(db, *utc_days(1)), days(db, *utc_days(7)))
    return {
        "time": time.time(),
        "last_hour": hour.as_json(),
        "today": _window(today, by_model=True),
        "last_7_days": _window(week, by_model=False),
    }


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    figures, now = await asyncio.gather(traffic_figures(request), live(request))
    return aiohttp_jinja2.render_template("dashboard.html", request, {**figures, "live": now})


@routes.get("/api/monitor")
async def monitor_json(request: web.Request) -> web.Response:
    return web.json_response(await live(request))


@routes.get("/api/dashboard")
async def dashboard_json(request: web.Request) -> web.Response:
    """The dashboard's figures (``traffic_figures``) for the page's refresh and for scripts."""
    return web.json_response(await traffic_figures(request))
