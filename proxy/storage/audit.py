"""The admin audit log: who did what, when, from where, with the state before and after.

Every state change made through the admin UI, its JSON API, an admin API token or the CLI writes one
row, in the SAME transaction as the change (issue 20): the storage method that makes the change takes
the :class:`Actor` (``by=``) and passes its write job through :func:`audited`, which appends the row
that the job's result describes (:class:`Audit`) inside the job's own savepoint. A failed audit insert
therefore undoes the change, and a change that fails leaves no row. ``by=None`` is a change nobody
asked for (the reconciler, a download's progress, a test's set-up) and writes no row. Events that are
their own change (a login, a refused request) use :func:`record_audit`, the same insert.

``before`` and ``after`` are JSON objects of the public fields of what changed; :func:`scrub` drops
anything whose name says it is a secret, as a second line of defence behind the callers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from proxy.storage.database import Database

_SECRET_WORDS = ("password", "secret", "hash", "token_value", "full_key", "totp", "recovery")
MAX_PAGE = 500
T = TypeVar("T")
_INSERT = (
    "INSERT INTO admin_audit (created_at, actor, source, action, target, before, after) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
)


@dataclass(frozen=True)
class Actor:
    """Who changes something: an account or token (``alice``, ``token:ci``) from a client address,
    or a command line user (``cli:root`` from ``cli``)."""

    name: str
    source: str


@dataclass(frozen=True)
class Audit:
    """What one audit row says of a change: the action, its target, the public state before and after."""

    action: str
    target: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


def insert_audit(conn: sqlite3.Connection, actor: Actor, audit: Audit) -> int:
    """Append one row on ``conn`` (inside the caller's write job, so in its transaction); its id."""
    row = (
        time.time(),
        actor.name,
        actor.source,
        audit.action,
        audit.target,
        _dump(scrub(audit.before)),
        _dump(scrub(audit.after)),
    )
    return int(conn.execute(_INSERT, row).fetchone()[0])


def audited(
    by: Actor | None, job: Callable[[sqlite3.Connection], T], describe: Callable[[T], Audit | None]
) -> Callable[[sqlite3.Connection], T]:
    """``job`` followed, in the same write job, by the audit row ``describe(result)`` (None: no change
    was made, nothing to say); ``job`` itself when nobody (``by=None``) asked for the change."""
    if by is None:
        return job
    actor = by

    def run(conn: sqlite3.Connection) -> T:
        value = job(conn)
        audit = describe(value)
        if audit is not None:
            insert_audit(conn, actor, audit)
        return value

    return run


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
    """Append one entry for an event that is its own change (a login, a refusal); its id once committed."""
    return await record_event(db, Actor(actor, source), Audit(action, target, before, after))


async def record_event(db: Database, by: Actor, audit: Audit) -> int:
    """:func:`record_audit` with an :class:`Actor` (an asked-for action that changes no row itself)."""
    return await db.execute_write(lambda conn: insert_audit(conn, by, audit))


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
