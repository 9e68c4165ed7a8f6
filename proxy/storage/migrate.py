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
