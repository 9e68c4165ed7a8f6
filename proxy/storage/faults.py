"""What a SQLite failure means: a temporary one (a full disk, a lock held elsewhere) or not.

A temporary failure is a :class:`DatabaseBusyError` (the proxy answers 503 with ``retry-after``); a
run of them is one :class:`Incident`, logged when it starts and when writes work again, not once per
failed job. Split from :mod:`proxy.storage.database`, whose writer and readers use it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from proxy.storage.errors import DatabaseBusyError, DatabaseError

log = logging.getLogger(__name__)

_TEMPORARY_CODES = {5, 6, 13}  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL
DISK_FULL_BYTES = 256 * 1024


def is_temporary(exc: sqlite3.Error, path: Path | None = None) -> bool:
    """A full disk or a lock held elsewhere (``sqlite_errorcode`` on 3.11+, the message on 3.10).

    SQLite reports some writes that fail for lack of space (the WAL, its index) as a plain I/O
    error; with ``path`` such an error counts as "full" when its filesystem has no space left.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc).lower()
    if code is not None and (code & 0xFF) in _TEMPORARY_CODES:
        return True
    if code is None and ("is full" in text or "locked" in text):
        return True
    return path is not None and "i/o error" in text and disk_full(path)


def disk_full(path: Path) -> bool:
    """Whether the filesystem holding ``path`` has (almost) no space left for unprivileged writes."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < DISK_FULL_BYTES


def translate(exc: sqlite3.Error, what: str, path: Path | None = None) -> DatabaseError:
    """The storage error for a sqlite error: :class:`DatabaseBusyError` when it is temporary."""
    temporary = is_temporary(exc, path)
    if temporary and path is not None and disk_full(path):
        what = f"{what} (the disk holding {path} is full)"
    error = (DatabaseBusyError if temporary else DatabaseError)(f"{what}: {exc}")
    error.__cause__ = exc
    return error


class Incident:
    """Logs a run of temporary failures (disk full, locked) once when it starts and once when it ends.

    On a nearly full disk some transactions still fit and others do not; the incident ends only at
    the first success :data:`QUIET` seconds after the last failure, so a flapping disk is one incident.
    """

    QUIET = 10.0
    RECENT = 3.0  # a write failed this recently: the database counts as not writable (Database.unwritable)

    def __init__(self) -> None:
        self.failures = 0
        self._last_failure = 0.0
        self._failing = False  # the last write failed

    def failing(self) -> bool:
        """Whether a write failed in the last :data:`RECENT` seconds and none has worked since."""
        return self._failing and time.monotonic() - self._last_failure < self.RECENT

    def failed(self, exc: BaseException) -> None:
        if self.failures == 0:
            log.error("the database cannot be written (%s); requests answer 503 until it can", exc)
        self.failures += 1
        self._last_failure = time.monotonic()
        self._failing = True

    def recovered(self) -> None:
        self._failing = False
        if self.failures and time.monotonic() - self._last_failure >= self.QUIET:
            log.warning("the database is writable again (%d write(s) failed meanwhile)", self.failures)
            self.failures = 0
