"""Counting first-time key verifications that fail, per (client address, public id) and per address.

A verification that is not answered from the verifier's cache costs argon2 (about 0.2 s of CPU and
64 MiB). :class:`Throttle` counts, per name, the verifications that started and did not succeed
within a fixed window: those still running and those that failed. When a name reaches its limit it
is :meth:`~Throttle.blocked` until the window ends, and the verifier slows its attempts down
(``proxy.auth.verifier``). A success gives its attempt back. Keys already verified never get here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _Window:
    started: float
    count: int = 0


class Throttle:
    """At most ``limit`` unsuccessful attempts per name per ``window`` seconds; bounded memory."""

    def __init__(self, limit: int, window: float = 60.0, max_names: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_names = max_names
        self._names: dict[str, _Window] = {}

    def blocked(self, name: str | None) -> bool:
        entry = self._current(name)
        return entry is not None and entry.count >= self.limit

    def count(self, name: str | None) -> int:
        """Unsuccessful attempts under ``name`` in its current window."""
        entry = self._current(name)
        return 0 if entry is None else entry.count

    def retry_after(self, name: str | None) -> float:
        """Seconds until ``name``'s window ends (0 when it is not blocked)."""
        entry = self._current(name)
        if entry is None or entry.count < self.limit:
            return 0.0
        return max(0.0, self.window - (time.monotonic() - entry.started))

    def attempt(self, name: str | None) -> None:
        """Count an attempt under ``name`` (call :meth:`succeeded` if it turns out right)."""
        if name is None:
            return
        entry = self._current(name)
        if entry is None:
            if len(self._names) >= self.max_names:
                self._prune()
            entry = self._names[name] = _Window(time.monotonic())
        entry.count += 1

    def succeeded(self, name: str | None) -> None:
        entry = self._current(name)
        if entry is not None and entry.count > 0:
            entry.count -= 1

    def _current(self, name: str | None) -> _Window | None:
        if name is None:
            return None
        entry = self._names.get(name)
        if entry is not None and time.monotonic() - entry.started >= self.window:
            del self._names[name]
            return None
        return entry

    def _prune(self) -> None:
        now = time.monotonic()
        self._names = {n: e for n, e in self._names.items() if now - e.started < self.window}
        if len(self._names) >= self.max_names:  # a flood of distinct names: start over rather than grow
            log.warning("verification throttle: more than %d names in one window; forgetting them", self.max_names)
            self._names.clear()
