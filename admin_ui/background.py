"""Work a request starts and does not wait for (a model's download or run), shared by the Models page
and the model API: kept in a set on the app so that the app's cleanup cancels what still runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.lifecycle.errors import LifecycleError
from proxy.storage.errors import StorageError

log = logging.getLogger(__name__)

tasks_key: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("admin_model_tasks")


def setup_background(app: web.Application) -> None:
    """The task set and the cleanup that cancels its tasks (once per app)."""
    if tasks_key not in app:
        app[tasks_key] = set()
        app.cleanup_ctx.append(_background_tasks)


async def _background_tasks(app: web.Application) -> AsyncIterator[None]:
    yield
    running = [*app[tasks_key]]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def background(request: web.Request, work: Callable[[], Awaitable[Any]], what: str) -> None:
    """Run ``work`` after the answer; its failure is logged (and on the model's row)."""

    async def run() -> None:
        try:
            await work()
        except (StorageError, LifecycleError) as exc:  # the error is on the model's row
            log.warning("%s: %s", what, exc)

    task = asyncio.ensure_future(run())
    tasks = request.app[tasks_key]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
