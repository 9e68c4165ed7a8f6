"""The descriptor budget of the proxy's HTTP server: how many connections it may hold open, the
listening backlog, and ``accept()`` failures (EMFILE) as one warning a minute instead of a traceback
per try. :class:`~proxy.connection.handler.ConnectionGuard` enforces the bound.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

FD_RESERVE = 128  # descriptors kept for the database, the runtime socket, logs, threads and uploads' files
# The listening socket's backlog: asyncio accepts up to this many connections per wake-up, and they
# hold their descriptors an iteration or two before the bound can close others to make room (a flood
# of reconnecting clients ran the process out of descriptors: every upload failed with EMFILE, issue
# 18). The bound leaves room for two such bursts besides FD_RESERVE.
ACCEPT_BACKLOG = 64
WARN_EVERY = 60.0


def connection_limit(configured: int) -> int:
    """``configured``, or (0) the open-file limit minus :data:`FD_RESERVE` and two accept bursts
    (:data:`ACCEPT_BACKLOG`), never above that limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = max(16, soft - FD_RESERVE - 2 * ACCEPT_BACKLOG) if soft != resource.RLIM_INFINITY else 65_536
    return min(configured, ceiling) if configured else ceiling


@dataclass
class RateLimitedWarning:
    """Logs ``message`` at most once per ``every`` seconds, with how often it happened meanwhile."""

    message: str
    every: float = WARN_EVERY
    _last: float = -WARN_EVERY * 2
    _suppressed: int = 0

    def __call__(self, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        log.warning(self.message + more, *args)
        self._last, self._suppressed = now, 0


class AcceptErrorFilter:
    """A loop exception handler: a failed ``accept()`` (EMFILE) becomes one warning a minute,
    without a traceback; everything else goes to the default handler."""

    def __init__(self) -> None:
        self._warn = RateLimitedWarning("accept() failed (%s): too many open files; excess connections wait")

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            self._warn(exc.strerror or exc)
            return
        loop.default_exception_handler(context)
