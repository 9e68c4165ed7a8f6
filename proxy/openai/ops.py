"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from proxy.appkeys import db_key, metrics_key, runtime_key
from runtime.api.errors import RuntimeClientError

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[db_key].execute_read(lambda conn: conn.execute("SELECT 1").fetchone())
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: the database did not answer: %s", exc)
        checks["database"] = "unavailable"
    try:
        await asyncio.wait_for(request.app[runtime_key].ping(timeout=1.0), 1.5)
        checks["runtime"] = "ok"
    except (RuntimeClientError, asyncio.TimeoutError) as exc:  # details in the log, not to anyone who asks
        log.warning("readiness: the runtime did not answer: %s", exc or type(exc).__name__)
        checks["runtime"] = "unreachable"
    ok = all(v == "ok" for v in checks.values())
    request.app[metrics_key].runtime_up.set(1 if checks["runtime"] == "ok" else 0)
    return web.json_response({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
