"""Which process holds a quota reservation, and whether that process still lives.

A reservation belongs to the request that made it, so to the process serving that request: when the
process dies, nobody will ever settle it. Each serving process draws an owner id at start and names
it on every reservation it makes; it holds an exclusive ``flock`` on ``<database>.owners/<id>`` for
as long as it runs. The kernel drops the lock when the process dies, even by SIGKILL, so another
process that can take the lock knows the owner is gone and releases its reservations at once
(:func:`proxy.storage.usage.reclaim_stale_reservations`), while the reservations of a live proxy
sharing the file (a second proxy, ``llmserver admin serve``, the CLI) are never touched, whatever
their age. Reservations without an owner (made before owners existed) are reclaimed by age only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

_ID = re.compile(r"[0-9a-f]{32}")  # an owner id read back from the database names a file: nothing else


def owners_dir(database: Path) -> Path:
    """Where the owners' lock files live: beside the database, like its serving lock."""
    return database.with_name(database.name + ".owners")


class ReservationOwner:
    """This process as the owner of the reservations it makes: its id, and the lock that proves it lives."""

    def __init__(self, directory: Path, owner_id: str, fd: int) -> None:
        self.directory, self.id, self._fd = directory, owner_id, fd

    @classmethod
    def claim(cls, database: Path) -> ReservationOwner:
        """A new owner id, locked for the life of this process (OSError when the directory is unusable)."""
        directory = owners_dir(database)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner_id = uuid.uuid4().hex
        fd = os.open(directory / owner_id, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(directory, owner_id, fd)

    def close(self) -> None:
        """At a clean stop (its reservations are settled): the lock file goes."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / self.id).unlink()
        os.close(self._fd)


def gone_owners(database: Path, owners: Iterable[str]) -> list[str]:
    """The owners among ``owners`` whose process is gone (their lock files are removed on the way)."""
    directory = owners_dir(database)
    return [owner for owner in owners if _ID.fullmatch(owner) and _gone(directory / owner)]


def _gone(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True  # it stopped cleanly, or a sweeper saw it gone before
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # the owner holds its lock: alive
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True
