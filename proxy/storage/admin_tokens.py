"""Admin API tokens: bearer tokens for scripts that use ``/admin/api`` without a browser session.

A token reads ``llmsadm_<public id>_<secret>`` and is shown once. Only the SHA-256 of the secret
is stored: the secret is 32 random base62 characters (about 190 bits), so a slow password hash
would add nothing but latency to every API call; the comparison is constant-time. A token has a
scope, ``admin`` (read and write) or ``viewer`` (read only), and can be revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import string
import time
from dataclasses import dataclass

from proxy.storage.bounds import check_text
from proxy.storage.database import Database
from proxy.storage.errors import ValidationError

PREFIX = "llmsadm"
SCOPES = ("admin", "viewer")
_BASE62 = string.digits + string.ascii_letters
_COLUMNS = "id, public_id, name, scope, created_by, created_at, revoked_at, last_used_at"


@dataclass(frozen=True)
class AdminToken:
    id: int
    public_id: str
    name: str
    scope: str
    created_by: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None

    def public(self) -> dict[str, object]:
        return dict(self.__dict__)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _random(n: int) -> str:
    return "".join(secrets.choice(_BASE62) for _ in range(n))


def parse_token(raw: str) -> tuple[str, str] | None:
    """``(public_id, secret)`` of a well-formed token, else None."""
    parts = raw.split("_")
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 12 or len(parts[2]) != 32:
        return None
    if not (parts[1].isascii() and parts[1].isalnum() and parts[2].isascii() and parts[2].isalnum()):
        return None
    return parts[1], parts[2]


class AdminTokenRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, scope: str, created_by: str) -> tuple[str, AdminToken]:
        """A new token: ``(full token, row)``; the full token exists only in this return value."""
        name = check_text("name", name, max_length=200)
        if scope not in SCOPES:
            raise ValidationError(f"a token scope is one of {', '.join(SCOPES)}", field="scope")
        public_id, secret = _random(12), _random(32)
        row = (public_id, name, _digest(secret), scope, created_by, time.time())
        sql = (
            "INSERT INTO admin_tokens (public_id, name, secret_hash, scope, created_by, created_at) "
            f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}"
        )
        token = await self._db.execute_write(lambda c: AdminToken(*c.execute(sql, row).fetchone()))
        return f"{PREFIX}_{public_id}_{secret}", token

    async def verify(self, raw: str) -> AdminToken | None:
        """The live token ``raw`` stands for, or None; notes its last use."""
        parsed = parse_token(raw)
        if parsed is None:
            return None
        public_id, secret = parsed

        def read(conn: sqlite3.Connection) -> tuple[AdminToken, str] | None:
            sql = f"SELECT {_COLUMNS}, secret_hash FROM admin_tokens WHERE public_id = ? AND revoked_at IS NULL"
            row = conn.execute(sql, (public_id,)).fetchone()
            return None if row is None else (AdminToken(*tuple(row)[:-1]), row[-1])

        found = await self._db.execute_read(read)
        if found is None or not hmac.compare_digest(found[1], _digest(secret)):
            return None
        now = time.time()
        if found[0].last_used_at is None or now - found[0].last_used_at > 60:
            sql = "UPDATE admin_tokens SET last_used_at = ? WHERE id = ?"
            await self._db.execute_write(lambda c: c.execute(sql, (now, found[0].id)))
        return found[0]

    async def list(self) -> list[AdminToken]:
        sql = f"SELECT {_COLUMNS} FROM admin_tokens ORDER BY id"
        return await self._db.execute_read(lambda c: [AdminToken(*r) for r in c.execute(sql)])

    async def revoke(self, token_id: int) -> AdminToken | None:
        sql = f"UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING {_COLUMNS}"
        now = time.time()

        def write(conn: sqlite3.Connection) -> AdminToken | None:
            row = conn.execute(sql, (now, token_id)).fetchone()
            return None if row is None else AdminToken(*row)

        return await self._db.execute_write(write)
