"""Telling systemd (and the person at the terminal) the truth about the proxy's state.

Both services are ``Type=notify``. Each one sends ``READY=1`` only once it really serves, feeds the
watchdog only while its own health check passes, and says ``STOPPING=1`` when it begins to stop
(:mod:`llmserver.supervision.sdnotify` speaks the protocol; the runtime's side is
:mod:`llmserver.supervision.runtime`).

- The proxy (:func:`proxy_supervision`, an aiohttp cleanup context added by ``serve``): ready when
  the warm-up is done (``proxy.ops.warmup``) and :func:`proxy.ops.health.check_health` passes,
  i.e. what ``/readyz`` says; then ``WATCHDOG=1`` after each passing health check (the database
  answers and its file is still there, the runtime answers a ping). ``llmserver up`` prints its
  banner at the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from llmserver.supervision.sdnotify import Notifier
from proxy.ops.health import check_health
from proxy.ops.warmup import warmup_key

log = logging.getLogger(__name__)

RETRY_EVERY = 0.2  # seconds between readiness checks while starting


def proxy_supervision(
    notifier: Notifier, banner: str | None = None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: READY=1 (and the banner) when ready, the watchdog, STOPPING=1 at shutdown."""

    async def supervise(app: web.Application) -> AsyncIterator[None]:
        async def stopping(_: web.Application) -> None:
            notifier.stopping()

        app.on_shutdown.append(stopping)
        task = asyncio.create_task(_supervise_proxy(app, notifier, banner))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return supervise


async def _supervise_proxy(app: web.Application, notifier: Notifier, banner: str | None) -> None:
    warmup, said = app[warmup_key], ""
    while True:
        if warmup.done.is_set():
            checks = await check_health(app)
            if _healthy(checks):
                break
            state = f"starting: {_describe(checks)}"
        else:
            state = f"starting: warm-up {warmup.state}"
        if state != said:  # say each state once, not every 0.2 s
            notifier.status(said := state)
        await asyncio.sleep(RETRY_EVERY)
    notifier.ready("serving")
    log.info("ready: the warm-up is done, the database and the runtime answer")
    if banner is not None:
        sys.stdout.write(banner + "\n")
        sys.stdout.flush()
    interval = notifier.watchdog_interval
    while interval is not None:  # systemd asked for a watchdog
        await asyncio.sleep(interval)
        checks = await check_health(app)
        if _healthy(checks):
            notifier.notify(watchdog="1", status="serving")
        else:
            log.warning("health check failed (%s): not feeding the watchdog", _describe(checks))
            notifier.status(f"unhealthy: {_describe(checks)}")


def _healthy(checks: dict[str, str]) -> bool:
    return all(v == "ok" for v in checks.values())


def _describe(checks: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in checks.items())
