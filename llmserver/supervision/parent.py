"""A child that dies with its parent: ``llmserver up``'s runtime daemon, however ``up`` ends.

``up`` stops its daemon when it stops, but SIGKILL (the OOM killer) gives it no chance: the daemon
lived on, re-parented to init, holding its models, and the next ``up`` started a second one on the
same endpoint (issue 25). ``up`` passes its pid (``--parent-pid``) and the daemon calls
:func:`die_with_parent` as it starts:

1. Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, so the kernel sends SIGTERM the moment the parent
   dies; ``getppid()`` read afterwards closes the race of a parent that died before the call;
2. everywhere: a thread that looks every half second whether the parent is still the process that
   started it, and stops the daemon when it is not (also where prctl is missing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCH_EVERY = 0.5  # seconds between looks at the parent


class ParentGoneError(Exception):
    """The parent died before the child could tie itself to it."""


def die_with_parent(parent: int, stop: Callable[[], object]) -> threading.Thread:
    """Get SIGTERM when ``parent`` dies (Linux) and call ``stop`` once it is gone (everywhere).

    Raises :class:`ParentGoneError` when ``parent`` is gone already. Returns the watching thread.
    """
    _request_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        raise ParentGoneError(f"the parent process {parent} is gone")
    watcher = threading.Thread(target=_watch, args=(parent, stop), name="parent-watch", daemon=True)
    watcher.start()
    return watcher


def _request_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)``; False where there is no prctl (not Linux) or it failed."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def _watch(parent: int, stop: Callable[[], object]) -> None:
    while True:
        time.sleep(WATCH_EVERY)
        if os.getppid() != parent:
            log.warning("the parent process %d is gone: stopping", parent)
            stop()
            return
