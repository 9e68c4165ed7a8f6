"""The admin audit log: who did what, when, from where, with the state before and after.

Every state change made through the admin UI, its JSON API or the CLI writes one row. ``before``
and ``after`` are JSON objects of the public fields of what changed; :func:`scrub` drops anything
whose name says it is a secret, as a second line of defence behind the callers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.storage.database import Database

_SECRET_WORDS = ("password", "secret", "hash", "token_value", "full_key", "totp", "recovery")
MAX_PAGE = 500


@dataclass(frozen=True)
class AuditEntry:
    id: int
    created_at: float
    actor: str
    source: str
    action: str
    target: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def scrub(values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``values`` without fields that could hold a secret."""
    if values is None:
        return None
    return {k: v for k, v in values.items() if not any(w in k.lower() for w in _SECRET_WORDS)}


async def record_audit(
    db: Database,
    actor: str,
    source: str,
    action: str,
    target: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> int:
    """Append one entry; its id once committed."""
    row = (
        time.time(),
        actor,
        source,
        action,
        target,
        _dump(scrub(before)),
        _dump(scrub(after)),
    )
    sql = (
        "INSERT INTO admin_audit (created_at, actor, source, action, target, before, after) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
    )
    return int(await db.execute_write(lambda c: c.execute(sql, row).fetchone()[0]))


async def list_audit(
    db: Database,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEntry]:
    """Newest first, filtered by exact actor, action prefix and time range."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if actor:
        where.append("actor = ?")
        params.append(actor)
    if action:
        where.append("action LIKE ? ESCAPE '\\'")
        params.append(action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if since is not None:
        where.append("created_at >= ?")
        params.append(since)
    if until is not None:
        where.append("created_at < ?")
        params.append(until)
    sql = (
        "SELECT id, created_at, actor, source, action, target, before, after FROM admin_audit "
        f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ? OFFSET ?"
    )
    params += [max(1, min(limit, MAX_PAGE)), max(0, offset)]

    def read(conn: sqlite3.Connection) -> list[AuditEntry]:
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], _load(r[6]), _load(r[7])) for r in conn.execute(sql, params)
        ]

    return await db.execute_read(read)


def _dump(values: dict[str, Any] | None) -> str | None:
    return None if values is None else json.dumps(values, default=str, sort_keys=True)


def _load(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))
