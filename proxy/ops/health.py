"""The operator's routes: ``/healthz``, ``/readyz`` and ``/metrics``, the health check behind them,
and the warm-up readiness waits for (:mod:`proxy.ops.warmup`). They belong to no front: no API key,
no metering.

``/healthz`` says the process answers. ``/readyz`` says it can serve: :func:`check_health` (the
database answers and its file is still where it was opened; the runtime answers a ping) and the
warm-up is done (:mod:`proxy.ops.warmup`), so that the first request after ``ready`` costs
what a warm one does, and the usage ledger can be written (``"ledger"``: not on a full disk, nor
while writes fail; admission refuses requests meanwhile). The systemd watchdog is fed from
:func:`check_health`, which leaves the ledger out: a restart does not free a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.appkeys import db_key, metrics_key, runtime_key
from proxy.ops.warmup import Warmup, warmup_key
from runtime.api.errors import RuntimeClientError

log = logging.getLogger(__name__)


def setup_ops(app: web.Application) -> None:
    """The three routes, and the warm-up as a ``cleanup_ctx`` (after the runtime's)."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_warmup)


async def _warmup(app: web.Application) -> AsyncIterator[None]:
    """Pay the first request's one-time costs in the background; ``/readyz`` waits for it."""
    warmup = app[warmup_key] = Warmup(app[runtime_key])
    task = asyncio.create_task(warmup.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def check_health(app: web.Application) -> dict[str, str]:
    """``{"database": ..., "runtime": ...}``, each ``"ok"`` or why not (details go to the log)."""
    checks: dict[str, str] = {}
    db = app[db_key]
    try:
        await db.execute_read(lambda conn: conn.execute("SELECT count(*) FROM api_keys").fetchone())
        # A file deleted or moved under a running proxy still answers on the open connection,
        # but nothing written there would survive: that is not healthy.
        checks["database"] = "ok" if db.path.exists() else "missing"
        if checks["database"] != "ok":
            log.warning("health: the database file %s is gone", db.path)
    except Exception as exc:
        log.warning("health: the database did not answer: %s", exc)
        checks["database"] = "unavailable"
    try:
        await asyncio.wait_for(app[runtime_key].ping(timeout=1.0), 1.5)
        checks["runtime"] = "ok"
    except (RuntimeClientError, asyncio.TimeoutError) as exc:  # details in the log, not to anyone who asks
        log.warning("health: the runtime did not answer: %s", exc or type(exc).__name__)
        checks["runtime"] = "unreachable"
    app[metrics_key].runtime_up.set(1 if checks["runtime"] == "ok" else 0)
    return checks


async def readyz(request: web.Request) -> web.Response:
    checks = await check_health(request.app)
    warmup = request.app[warmup_key]
    checks["warmup"] = "ok" if warmup.done.is_set() else warmup.state
    checks["ledger"] = request.app[db_key].unwritable() or "ok"
    ok = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
