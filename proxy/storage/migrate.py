"""Schema migrations with yoyo: create the file, switch it to WAL, apply what is pending."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import yoyo

from proxy.storage.errors import DatabaseError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"  # shipped inside the package
BUSY_TIMEOUT_MS = 5000


def apply_migrations(path: Path, migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Create the file if needed, switch it to WAL and apply pending migrations; their ids."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
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
        raise DatabaseError(f"cannot migrate the database at {path}: {exc}") from exc
    applied = [m.id for m in pending]
    if applied:
        log.info("applied migrations %s to %s", ", ".join(applied), path)
    return applied


def known_migrations(migrations_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """The ids of the migrations this code ships, in order."""
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
