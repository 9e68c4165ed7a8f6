"""What an admin's destructive action would break, said before it is taken (issue 19): how many
requests used a key or a model lately, which keys may use only one model, which models name a
Hugging Face token. Each read is one indexed range or a small table; nothing scans the ledger.
"""

from __future__ import annotations

import json
import sqlite3
import time

from proxy.storage.database import Database

RECENT = 86400.0  # "the last day"


async def recent_requests(db: Database, *, api_key_id: int | None = None, model: str | None = None) -> int:
    """Requests in the last day made with key ``api_key_id`` or to model ``model``
    (``token_usage_events_key_time`` / ``token_usage_events_model_time``)."""
    column, value = ("api_key_id", api_key_id) if api_key_id is not None else ("model", model)
    since = time.time() - RECENT

    def count(conn: sqlite3.Connection) -> int:
        sql = f"SELECT COUNT(*) FROM token_usage_events WHERE {column} = ? AND created_at >= ?"
        return int(conn.execute(sql, (value, since)).fetchone()[0])

    return await db.execute_read(count)


async def keys_only_for(db: Database, model: str) -> list[str]:
    """Names of the usable keys whose allow-list holds ``model`` alone."""
    now = time.time()

    def read(conn: sqlite3.Connection) -> list[str]:
        sql = (
            "SELECT name FROM api_keys WHERE allowed_models = ? AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY id"
        )
        return [str(row[0]) for row in conn.execute(sql, (json.dumps([model]), now))]

    return await db.execute_read(read)


async def active_admins(db: Database) -> list[str]:
    """Names of the accounts that can log in as ``admin``."""

    def read(conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute("SELECT username FROM users WHERE role = 'admin' AND disabled = 0 ORDER BY id")
        return [str(row[0]) for row in rows]

    return await db.execute_read(read)


async def keys_of_user(db: Database, user_id: int) -> int:
    """How many unrevoked API keys account ``user_id`` created (``api_keys_user_id``)."""

    def count(conn: sqlite3.Connection) -> int:
        sql = "SELECT COUNT(*) FROM api_keys WHERE user_id = ? AND revoked_at IS NULL"
        return int(conn.execute(sql, (user_id,)).fetchone()[0])

    return await db.execute_read(count)


async def admin_tokens_of_user(db: Database, user_id: int) -> list[str]:
    """Names of the live admin API tokens account ``user_id`` owns (``admin_tokens_user``): disabling
    the account revokes them for good."""
    now = time.time()

    def read(conn: sqlite3.Connection) -> list[str]:
        sql = (
            "SELECT name FROM admin_tokens WHERE user_id = ? AND revoked_at IS NULL "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY id"
        )
        return [str(row[0]) for row in conn.execute(sql, (user_id, now))]

    return await db.execute_read(read)
