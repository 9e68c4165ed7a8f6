"""Who is serving a database file: an advisory lock beside it, held by every process that serves it.

A proxy holds a shared ``flock`` on ``<database>.serving.lock`` for as long as it runs; any number
of them may. ``llmserver restore`` asks for the exclusive lock without waiting: it gets it only when
no process serves the file. The kernel drops a lock when its process dies, even by SIGKILL, so a
crashed proxy never leaves a stale lock behind (which a pid file would).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from proxy.storage.errors import StorageError


class DatabaseInUseError(StorageError):
    """A process serves the database (it holds the serving lock)."""


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".serving.lock")


@contextmanager
def serving(database: Path) -> Iterator[None]:
    """Hold the shared serving lock of ``database`` (created with its directory) while the block runs."""
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextmanager
def exclusive(database: Path) -> Iterator[None]:
    """Hold the exclusive lock at once, or raise :class:`DatabaseInUseError` when a process serves it."""
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseInUseError(
                f"a running proxy serves {database}; stop it first (systemctl stop llmserver-proxy, "
                "or Ctrl-C in llmserver up)"
            ) from None
        yield
    finally:
        os.close(fd)


def is_served(database: Path) -> bool:
    """Whether a process holds the serving lock of ``database`` now."""
    path = lock_path(database)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
