"""Schema migrations with yoyo: create the file privately, switch it to WAL, apply what is pending.

The database holds key hashes, usage and the encrypted vault: its directory is created 0700 and
the file 0600 before SQLite opens it (SQLite gives the WAL and shared-memory files the database
file's mode). Existing ones are tightened, with a warning, since they were most likely created by
an older version: the files to 0600, the directory by removing access for "other" (a group given to
it on purpose, as systemd's ``StateDirectoryMode=0750``, is kept).

The SQL files live in the repository's top-level ``migrations/`` folder (the design card's layout).
A checkout (``make run``, ``make test``, an editable install) reads them there; the wheel ships them
as data files in ``<prefix>/share/llmserver/migrations``, found through the installed distribution's
file list, so a ``--user`` or ``--prefix`` install finds them as well as a venv.
"""

from __future__ import annotations

import errno
import importlib.metadata
import logging
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import yoyo

from proxy.storage.errors import DatabaseBusyError, DatabaseError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000


def find_migrations_dir() -> Path:
    """The folder of the SQL migrations: the checkout's ``migrations/``, else the installed wheel's."""
    root = Path(__file__).resolve().parents[2]
    if (root / "setup.cfg").is_file() and (root / "migrations").is_dir():
        return root / "migrations"
    try:
        files = importlib.metadata.distribution("llmserver").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.parts[-3:-1] == ("llmserver", "migrations") and file.suffix == ".sql":
            return Path(str(file.locate())).resolve().parent
    return root / "migrations"  # missing: applying or listing them says so


MIGRATIONS_DIR = find_migrations_dir()


def apply_migrations(path: Path, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Create the file if needed, switch it to WAL and apply pending migrations; their ids."""
    _check_present(migrations_dir)
    try:
        make_private(path)
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
        finally:
            conn.close()
        backend = yoyo.get_backend("sqlite:///" + str(path))
        with backend:
            migrations = yoyo.read_migrations(str(migrations_dir))
            with backend.lock():
                pending = backend.to_apply(migrations)
                backend.apply_migrations(pending)
    except (OSError, sqlite3.Error, yoyo.exceptions.LockTimeout) as exc:
        raise _migration_error(path, exc) from exc
    applied = [m.id for m in pending]
    if applied:
        log.info("applied migrations %s to %s", ", ".join(applied), path)
    return applied


def _check_present(migrations_dir: Path) -> None:
    """A broken install (no SQL files where they should be) stops here, not as a database without tables."""
    if not any(migrations_dir.glob("*.sql")):
        raise DatabaseError(f"no database migrations in {migrations_dir}: the installation is incomplete")


def make_private(path: Path) -> None:
    """Create the database's directory (0700) and file (0600); tighten existing ones that are not."""
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    # A shared directory (/tmp, a home) is not ours to close, and a group the administrator gave
    # the data directory (systemd's StateDirectoryMode=0750) is deliberate: only "other" is removed.
    if info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX and directory != Path.home():
        _tighten(directory, 0o770, others_only=True)
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if file.exists():
            _tighten(file, 0o600)


def _tighten(path: Path, mode: int, others_only: bool = False) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & (0o007 if others_only else 0o077) == 0:
        return
    try:
        path.chmod(current & mode)
    except OSError as exc:
        log.warning("%s is readable by other users (mode %o) and cannot be tightened: %s", path, current, exc)
        return
    log.warning("%s was readable by other users (mode %o); now %o", path, current, current & mode)


def _migration_error(path: Path, exc: BaseException) -> DatabaseError:
    """One sentence naming the path: a full disk, a lock, a read-only place, or what else it was."""
    text = str(exc).lower()
    nospace = "i/o error" in text and _no_space(path)  # how SQLite says ENOSPC for the WAL index
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "is full" in text or nospace:
        return DatabaseBusyError(f"the disk holding the database {path} is full")
    if isinstance(exc, yoyo.exceptions.LockTimeout) or "locked" in text:
        return DatabaseBusyError(f"the database {path} is locked by another process")
    if isinstance(exc, PermissionError) or "readonly" in text or "read-only" in text or "unable to open" in text:
        return DatabaseError(f"the database {path} cannot be created or written here (read-only or no permission)")
    return DatabaseError(f"cannot migrate the database at {path}: {exc}")


def _no_space(path: Path) -> bool:
    try:
        return shutil.disk_usage(path.parent).free == 0
    except OSError:
        return False


def known_migrations(migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """The ids of the migrations this code ships, in order."""
    _check_present(migrations_dir)
    return sorted(path.stem for path in migrations_dir.glob("*.sql"))


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """The ids yoyo recorded as applied in ``conn``'s database (none for a database it never saw)."""
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "_yoyo_migration" not in tables:
        return []
    return sorted(row[0] for row in conn.execute("SELECT migration_id FROM _yoyo_migration"))


def pending_migrations(path: Path, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Migrations not yet applied to the database at ``path``, read-only (a missing file: all of them)."""
    known = known_migrations(migrations_dir)
    if not path.exists():
        return known
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            applied = set(applied_migrations(conn))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read the database at {path}: {exc}") from exc
    return [m for m in known if m not in applied]
