"""Admin API tokens: bearer tokens for scripts that use ``/admin/api`` without a browser session.

A token reads ``llmsadm_<public id>_<secret>`` and is shown once. Only the SHA-256 of the secret
is stored: the secret is 32 random base62 characters (about 190 bits), so a slow password hash
would add nothing but latency to every API call; the comparison is constant-time. A token has a
scope, ``admin`` (read and write) or ``viewer`` (read only), and can be revoked.

A token acts as the account that owns it (issue 19): :meth:`AdminTokenRepository.verify` joins the
owner's row, so a token of a disabled account is refused and its role is the owner's *current* role
narrowed by the scope (an admin demoted to viewer has viewer tokens only). Disabling an account
revokes its tokens (:func:`revoke_owned`, in the same transaction), and a token may expire.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import string
import time
from dataclasses import dataclass

from proxy.storage.audit import Actor, Audit, audited
from proxy.storage.bounds import check_text
from proxy.storage.database import Database
from proxy.storage.errors import ValidationError

PREFIX = "llmsadm"
SCOPES = ("admin", "viewer")
MAX_DAYS = 3650  # the longest expiry a token may be given
_BASE62 = string.digits + string.ascii_letters
_FIELDS = "id public_id name scope created_by created_at revoked_at last_used_at user_id expires_at".split()
_COLUMNS = ", ".join(
    [*(f"admin_tokens.{f}" for f in _FIELDS), "(SELECT username FROM users WHERE users.id = admin_tokens.user_id)"]
)


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
    user_id: int | None
    expires_at: float | None
    owner: str | None  # the owning account's name

    def public(self) -> dict[str, object]:
        return dict(self.__dict__)

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at is not None and self.expires_at <= now else "active"


def effective_role(scope: str, owner_role: str) -> str:
    """What a token may do: its scope, never more than its owner's current role."""
    return "admin" if scope == "admin" and owner_role == "admin" else "viewer"


def revoke_owned(conn: sqlite3.Connection, user_id: int, now: float) -> None:
    """Revoke every live token of an account (inside the caller's transaction)."""
    conn.execute("UPDATE admin_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL", (now, user_id))


def _expiry(days: object, now: float) -> float | None:
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValidationError(
            f"expires_in_days must be a whole number of days from 1 to {MAX_DAYS}, or empty", field="expires_in_days"
        )
    return now + days * 86_400.0


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

    async def create(
        self,
        name: str,
        scope: str,
        created_by: str,
        user_id: int,
        expires_in_days: object = None,
        *,
        by: Actor | None = None,
    ) -> tuple[str, AdminToken]:
        """A new token of account ``user_id``: ``(full token, row)``; the full token exists only here.

        The scope cannot exceed the owner's role, and a disabled account gets no token. ``by``: who
        asked, audited in the same transaction (``proxy.storage.audit``; :meth:`revoke` alike)."""
        now = time.time()
        name = check_text("name", name, max_length=200)
        if scope not in SCOPES:
            raise ValidationError(f"a token scope is one of {', '.join(SCOPES)}", field="scope")
        expires_at = _expiry(expires_in_days, now)
        public_id, secret = _random(12), _random(32)
        row = (public_id, name, _digest(secret), scope, created_by, now, user_id, expires_at)
        sql = (
            "INSERT INTO admin_tokens (public_id, name, secret_hash, scope, created_by, created_at, user_id, "
            f"expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}"
        )

        def write(conn: sqlite3.Connection) -> AdminToken:
            owner = conn.execute("SELECT role, disabled FROM users WHERE id = ?", (user_id,)).fetchone()
            if owner is None or owner[1]:
                raise ValidationError("a token needs an enabled account to act as")
            if effective_role(scope, owner[0]) != scope:
                raise ValidationError("a viewer account can only have viewer tokens")
            return AdminToken(*conn.execute(sql, row).fetchone())

        token = await self._db.execute_write(audited(by, write, lambda t: _audit("admin_token.create", t)))
        return f"{PREFIX}_{public_id}_{secret}", token

    async def verify(self, raw: str) -> tuple[AdminToken, str] | None:
        """The live token ``raw`` stands for and the role it acts with, or None; notes its last use.

        Live: not revoked, not expired, owned by an enabled account."""
        parsed = parse_token(raw)
        if parsed is None:
            return None
        public_id, secret = parsed
        now = time.time()

        def read(conn: sqlite3.Connection) -> tuple[AdminToken, str, str] | None:
            sql = (
                f"SELECT {_COLUMNS}, secret_hash, users.role FROM admin_tokens JOIN users ON users.id = user_id "
                "WHERE public_id = ? AND revoked_at IS NULL AND NOT users.disabled "
                "AND (admin_tokens.expires_at IS NULL OR admin_tokens.expires_at > ?)"
            )
            row = conn.execute(sql, (public_id, now)).fetchone()
            return None if row is None else (AdminToken(*tuple(row)[:-2]), row[-2], row[-1])

        found = await self._db.execute_read(read)
        if found is None or not hmac.compare_digest(found[1], _digest(secret)):
            return None
        token = found[0]
        if token.last_used_at is None or now - token.last_used_at > 60:
            sql = "UPDATE admin_tokens SET last_used_at = ? WHERE id = ?"
            await self._db.execute_write(lambda c: c.execute(sql, (now, token.id)))
        return token, effective_role(token.scope, found[2])

    async def list(self) -> list[AdminToken]:
        sql = f"SELECT {_COLUMNS} FROM admin_tokens ORDER BY id"
        return await self._db.execute_read(lambda c: [AdminToken(*r) for r in c.execute(sql)])

    async def revoke(self, token_id: int, *, by: Actor | None = None) -> AdminToken | None:
        sql = f"UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING {_COLUMNS}"
        now = time.time()

        def write(conn: sqlite3.Connection) -> AdminToken | None:
            row = conn.execute(sql, (now, token_id)).fetchone()
            return None if row is None else AdminToken(*row)

        return await self._db.execute_write(audited(by, write, lambda t: _audit("admin_token.revoke", t)))


def _audit(action: str, token: AdminToken | None) -> Audit | None:
    return None if token is None else Audit(action, f"token {token.id}", after=token.public())
