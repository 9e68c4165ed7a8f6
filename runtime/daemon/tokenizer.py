"""The daemon's ``tokenize`` and ``detokenize`` calls, off its main thread.

The main thread reads every request and answers ``ping``, which the proxy's health check and the
systemd watchdog depend on. A megabyte of text takes llama.cpp's tokenizer about two seconds, so
tokenizing there let four clients stop the pings for 107 s (issue 18). Here the work runs in a
small pool of threads (llama.cpp's tokenizer reads the vocabulary only, so it is safe beside a
generation and beside another tokenizer), and the answer goes out through the outbox, as a model
worker's does. At most :data:`BACKLOG` calls wait or run: past that a call is refused at once with
``busy`` (the proxy answers 503 with ``retry-after``), and a call whose deadline passed while it
waited is not run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runtime.api.protocol import ERR_BACKEND, ERR_BUSY, ERR_DEADLINE
from runtime.backends.base import BackendError
from runtime.daemon.errors import BusyError

log = logging.getLogger(__name__)

THREADS = 2
BACKLOG = 16

Reply = Callable[[str, dict[str, Any]], None]  # (kind, body): the answer to one request


class TokenizerPool:
    """Runs tokenizer calls on its threads; each answers its request through ``reply``."""

    def __init__(self, threads: int = THREADS, backlog: int = BACKLOG) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tokenizer")
        self._backlog = backlog
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, work: Callable[[], dict[str, Any]], deadline: float, reply: Reply) -> None:
        """Queue ``work`` (its result is the ``result`` body); ``busy`` at once when the backlog is full."""
        with self._lock:
            if self._pending >= self._backlog:
                reply("error", {"code": ERR_BUSY, "message": "the runtime's tokenizer is busy; retry shortly"})
                return
            self._pending += 1
        try:
            self._pool.submit(self._run, work, deadline, reply)
        except RuntimeError:  # shut down
            self._done()
            reply("error", {"code": ERR_BUSY, "message": "the runtime is shutting down"})

    def _run(self, work: Callable[[], dict[str, Any]], deadline: float, reply: Reply) -> None:
        try:
            if time.time() > deadline:
                reply("error", {"code": ERR_DEADLINE, "message": "deadline passed while waiting for the tokenizer"})
                return
            reply("result", work())
        except BusyError as exc:
            reply("error", {"code": ERR_BUSY, "message": str(exc)})
        except BackendError as exc:
            reply("error", exc.frame())
        except Exception as exc:
            log.exception("tokenizer call failed")
            reply("error", {"code": ERR_BACKEND, "message": f"{type(exc).__name__}: {exc}"})
        finally:
            self._done()

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    def close(self) -> None:
        """Drop calls not started; those running finish on their own (they are short)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
