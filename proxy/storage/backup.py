"""Copies of the database that are safe to take while the proxy writes, and putting one back.

:func:`backup_database` uses SQLite's online backup API in one step: it reads the source inside
one read transaction, which in WAL mode never blocks the writer and sees exactly the transactions
committed before it began (and none half-way). The copy is written to a private temporary file
(mode 0600: it holds key hashes and the usage ledger) next to the target, switched from WAL to a
rollback journal so that it is one self-contained file, checked with ``PRAGMA integrity_check``,
fsynced, and only then renamed into place: a backup that exists is a whole one.

:func:`check_database` says whether a file is a database this code can serve: SQLite's integrity
check passes, it has the tables the proxy needs, and it has no migration this code does not know
(a backup from a newer version). :func:`restore_database` checks the copy first, then keeps the
current database aside (itself through the backup API, so a WAL that was never checkpointed is
kept too) and moves the copy into place. Whether a proxy is serving the file is the caller's
business (:mod:`proxy.storage.servinglock`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy.storage.errors import DatabaseError
from proxy.storage.migrate import BUSY_TIMEOUT_MS, applied_migrations, known_migrations

REQUIRED_TABLES = ("api_keys", "token_usage_events")
PRIVATE = 0o600


@dataclass(frozen=True)
class DatabaseCheck:
    """What :func:`check_database` found; ``problems`` is empty for a database that can be served."""

    path: Path
    problems: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def backup_database(source: Path, target: Path) -> int:
    """Copy the live database at ``source`` to the new file ``target`` (0600); its size in bytes."""
    if not source.is_file():
        raise DatabaseError(f"there is no database at {source}")
    if target.exists():
        raise DatabaseError(f"{target} exists already; choose a new file name")
    partial = target.with_name(f".{target.name}.partial")
    _private_file(partial)
    try:
        _copy(source, partial)
        check = check_database(partial)
        if not check.ok:
            raise DatabaseError(f"the copy failed its check: {'; '.join(check.problems)}")
        _fsync(partial)
        os.replace(partial, target)
        _fsync_dir(target.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target.stat().st_size


def check_database(path: Path) -> DatabaseCheck:
    """Integrity, the proxy's tables and the migrations of the database file at ``path`` (read-only)."""
    if not path.is_file():
        return DatabaseCheck(path, [f"{path} does not exist or is not a file"])
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            return _check(conn, path)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return DatabaseCheck(path, [f"{path} is not a readable SQLite database: {exc}"])


def restore_database(copy: Path, live: Path) -> Path | None:
    """Put the backup ``copy`` in place of ``live``; the path where the old database was kept, if any.

    Nobody may be using ``live`` (the caller checks). The copy is checked first and left untouched.
    """
    check = check_database(copy)
    if not check.ok:
        raise DatabaseError(f"{copy} cannot be restored: {'; '.join(check.problems)}")
    aside = None
    if live.exists():
        aside = live.with_name(f"{live.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}")
        _private_file(aside)
        _copy(live, aside)
    incoming = live.with_name(f".{live.name}.restoring")
    _private_file(incoming)
    try:
        _copy(copy, incoming)
        _fsync(incoming)
        for suffix in ("-wal", "-shm"):  # the old database's; its content is kept aside
            Path(f"{live}{suffix}").unlink(missing_ok=True)
        os.replace(incoming, live)
        _fsync_dir(live.parent)
    except BaseException:
        incoming.unlink(missing_ok=True)
        raise
    return aside


def _copy(source: Path, target: Path) -> None:
    """SQLite's online backup of ``source`` into ``target``, which ends up a one-file database."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        dst = sqlite3.connect(str(target), isolation_level=None)
        try:
            src.backup(dst)  # pages=-1: one step, one read transaction, one consistent snapshot
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot copy {source} to {target}: {exc}") from exc


def _check(conn: sqlite3.Connection, path: Path) -> DatabaseCheck:
    problems = []
    result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        problems.append(f"integrity_check failed: {'; '.join(result[:5])}")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [t for t in REQUIRED_TABLES if t not in tables]
    if missing:
        problems.append(f"not an llmserver database: no table {', '.join(missing)}")
    applied = applied_migrations(conn)
    known = known_migrations()
    unknown = [m for m in applied if m not in known]
    if unknown:
        problems.append(f"made by a newer llmserver (migrations unknown here: {', '.join(unknown)}); upgrade first")
    pending = [m for m in known if m not in applied]
    return DatabaseCheck(path, problems, applied, pending)


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (SQLite keeps the mode of a file it opens)."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
