"""The runtime daemon's readiness and watchdog for systemd, checked from outside its loop.

A thread beside the daemon's loop (:class:`RuntimeSupervisor`) talks to its own
daemon as a client would, over the endpoint it binds. Ready once every model has finished loading
and each ready one has answered a one-token generation (so the model's first decode is paid
here); then ``WATCHDOG=1`` after each ping its main loop answers within a second. A loop that is
stuck answers no ping, the watchdog starves, and systemd restarts the service. ``STOPPING=1`` is
sent by the daemon's own signal handling (``RuntimeServer.on_stop``), at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from llmserver.supervision.sdnotify import Notifier
from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeClientError
from runtime.api.protocol import SamplingParams
from runtime.api.state import LOADING, READY

log = logging.getLogger(__name__)

RETRY_EVERY = 0.2  # seconds between looks at the models while they load


class RuntimeSupervisor(threading.Thread):
    """The runtime's readiness and watchdog, checked from outside its loop (over its own endpoint)."""

    def __init__(self, endpoint: str, notifier: Notifier, stopping: Callable[[], bool]) -> None:
        super().__init__(name="sd-notify", daemon=True)
        self._endpoint = endpoint
        self._notifier = notifier
        self._stopping = stopping

    def run(self) -> None:
        asyncio.run(self._supervise())

    async def _supervise(self) -> None:
        async with RuntimeClient(self._endpoint, connect_wait=0.5) as client:
            models = await self._wait_loaded(client)
            if models is None:
                return
            for name in models:
                await self._warm(client, name)
            self._notifier.ready(f"serving {', '.join(models) or 'no models'}")
            log.info("ready: serving %s", ", ".join(models) or "no models")
            interval = self._notifier.watchdog_interval
            while interval is not None and not await self._sleep(interval):
                try:
                    await client.ping(timeout=1.0)
                except RuntimeClientError as exc:
                    log.warning("the daemon's loop did not answer a ping (%s): not feeding the watchdog", exc)
                    continue
                self._notifier.watchdog()

    async def _wait_loaded(self, client: RuntimeClient) -> list[str] | None:
        """Names of the ready models once none is loading; None when the daemon stops first."""
        while not self._stopping():
            try:
                models = await client.models()
            except RuntimeClientError:
                await asyncio.sleep(RETRY_EVERY)
                continue
            if not any(m.state == LOADING for m in models):
                return [m.name for m in models if m.state == READY]
            self._notifier.status("loading models")
            await asyncio.sleep(RETRY_EVERY)
        return None

    async def _warm(self, client: RuntimeClient, name: str) -> None:
        self._notifier.status(f"warming up {name}")
        try:
            async with client.generate(name, messages=[{"role": "user", "content": "Hi"}], params=_ONE_TOKEN) as s:
                async for _ in s:
                    pass
        except RuntimeClientError as exc:
            log.warning("warm-up generation on %s failed: %s", name, exc)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep in short steps; True as soon as the daemon is stopping."""
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            if self._stopping():
                return True
            await asyncio.sleep(min(0.1, seconds))
        return self._stopping()


_ONE_TOKEN = SamplingParams(max_tokens=1)
