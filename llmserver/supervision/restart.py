"""Keeping ``llmserver up``'s runtime daemon alive, as systemd's ``Restart=`` does for the units.

:class:`Supervisor` starts the daemon as a child process and watches it from a thread that waits on
it (which also reaps it: no zombie). When the child exits while nobody asked it to, the supervisor
says so in the log and starts it again after a back-off (0.5 s, doubling up to 30 s, back to the
start once a child has run for a minute), so a daemon killed by the OOM killer or a crash comes back
without anyone acting: the proxy's runtime client reconnects to the same endpoint by itself.
:meth:`Supervisor.stop` ends the watch and then the child (SIGTERM, then SIGKILL after a grace time).
A restarted child is started from the watching thread, which lives as long as the supervisor does: the
kernel's parent-death signal (:mod:`llmserver.supervision.parent`) follows the thread that started a
child, not the process.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

FIRST_DELAY = 0.5
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a child that ran this long resets the back-off
STOP_GRACE = 30.0


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    """One child process, restarted with back-off whenever it exits unasked."""

    def __init__(self, argv: Sequence[str], name: str = "the runtime daemon") -> None:
        self.argv = list(argv)
        self.name = name
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "start() first"
        return self._proc

    def start(self) -> Supervisor:
        self._proc = subprocess.Popen(self.argv)
        return self

    def watch(self) -> None:
        """From now on, restart the child whenever it exits (call once it has come up)."""
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then stop the child: SIGTERM, SIGKILL after :data:`STOP_GRACE` seconds."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(5)

    def _watch(self) -> None:
        delay = FIRST_DELAY
        while not self._stopping.is_set():
            proc = self.proc
            started = time.monotonic()
            code = proc.wait()  # reaps the child
            if self._stopping.is_set():
                return
            delay = FIRST_DELAY if time.monotonic() - started >= STABLE_AFTER else delay
            log.error("%s %s; restarting it in %.1f s", self.name, describe_exit(code), delay)
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._proc = subprocess.Popen(self.argv)
            self.restarts += 1
            log.warning("%s restarted (pid %d, restart %d)", self.name, self._proc.pid, self.restarts)
            delay = min(delay * 2, MAX_DELAY)
