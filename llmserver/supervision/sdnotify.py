"""systemd's notify protocol (sd_notify(3)) in a few lines: one datagram to ``$NOTIFY_SOCKET``.

A ``Type=notify`` service tells systemd ``READY=1`` when it can serve, ``WATCHDOG=1`` at least every
``WatchdogSec=`` (systemd passes it as ``$WATCHDOG_USEC``; we send twice as often) and
``STOPPING=1`` when it begins to shut down; ``STATUS=...`` is a free text ``systemctl status`` shows.
Each message is ``KEY=VALUE`` lines in one ``AF_UNIX`` datagram to the socket named by
``$NOTIFY_SOCKET``: a path, or an abstract-namespace name written with a leading ``@`` (sent with a
leading NUL byte). Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing.
``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; in any other process (a
child that inherited the environment) the watchdog is off.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notifier:
    """Where to send (None: nowhere) and how often systemd wants the watchdog fed (None: never)."""

    address: str | None
    watchdog_usec: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        return cls(address, _watchdog_usec(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` messages: half of systemd's timeout, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_usec is None else self.watchdog_usec / 2_000_000

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=VALUE`` lines (keys upper-cased); False when not under systemd or the send failed."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("could not notify systemd (%s): %s", self.address.replace("\0", "@"), exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(ready="1", status=status)

    def watchdog(self) -> bool:
        return self.notify(watchdog="1")

    def stopping(self) -> bool:
        return self.notify(stopping="1", status="stopping")

    def status(self, text: str) -> bool:
        return self.notify(status=text)


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(raw)
