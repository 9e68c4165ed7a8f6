"""API keys: the row type and the repository that creates, lists, changes and revokes them.

Only the argon2id hash of a key's secret and its last four characters are stored; the full key
exists once, in the return value of :meth:`KeyRepository.create_key`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import Any

from proxy.storage.audit import Actor, Audit, audited
from proxy.storage.budget import PERIODS, period_bounds
from proxy.storage.database import Database
from proxy.storage.errors import KeyNotFoundError
from proxy.storage.key_fields import check_key_fields
from proxy.storage.stored import StoredRow

KEY_COLUMNS = (
    "id, public_id, name, secret_hash, last_four, user_id, created_at, revoked_at, expires_at, token_limit, "
    "tokens_reserved, tokens_used, request_count, last_request_at, endpoint_counts, allowed_models, "
    "rpm_limit, tpm_limit, updated_at, budget_period, period_start, period_tokens_used, allowed_cidrs, disabled_at"
)


@dataclass(frozen=True)
class ApiKey:
    """One ``api_keys`` row. Counters in a cached copy may lag; quotas are enforced in SQL."""

    id: int
    public_id: str
    name: str
    last_four: str
    user_id: int | None
    created_at: float
    revoked_at: float | None
    expires_at: float | None
    token_limit: int | None
    tokens_reserved: int
    tokens_used: int
    request_count: int
    last_request_at: float | None
    endpoint_counts: Mapping[str, int]
    allowed_models: tuple[str, ...] | None
    rpm_limit: int | None
    tpm_limit: int | None
    updated_at: float
    secret_hash: str = field(repr=False, compare=False)
    budget_period: str | None = None
    period_start: float | None = None
    period_tokens_used: int = 0
    allowed_cidrs: tuple[str, ...] | None = None
    disabled_at: float | None = None

    invalid: tuple[str, ...] = ()

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ApiKey:
        """The row as stored; a column that holds what no check lets in (written by an older version
        or by hand) is logged and named in ``invalid``, and such a key refuses every request."""
        read = StoredRow(row, f"API key {row['id']}")
        key = cls(
            id=row["id"],
            public_id=row["public_id"],
            name=read.text("name", "(unnamed)"),
            last_four=read.text("last_four", "????"),
            user_id=read.optional_integer("user_id"),
            created_at=read.time("created_at", 0.0, shown=True),
            revoked_at=read.optional_time("revoked_at"),
            expires_at=read.optional_time("expires_at"),
            token_limit=read.optional_integer("token_limit"),
            tokens_reserved=read.integer("tokens_reserved"),
            tokens_used=read.integer("tokens_used"),
            request_count=read.integer("request_count"),
            last_request_at=read.optional_time("last_request_at", shown=True),
            endpoint_counts=MappingProxyType(read.json_object("endpoint_counts", shown=True)),
            allowed_models=read.optional_texts("allowed_models"),
            rpm_limit=read.optional_integer("rpm_limit"),
            tpm_limit=read.optional_integer("tpm_limit"),
            updated_at=read.time("updated_at", 0.0, shown=True),
            secret_hash=row["secret_hash"],
            budget_period=read.choice("budget_period", PERIODS),
            period_start=read.optional_time("period_start", shown=True),
            period_tokens_used=read.integer("period_tokens_used"),
            allowed_cidrs=read.optional_texts("allowed_cidrs"),
            disabled_at=read.optional_time("disabled_at"),
        )
        return replace(key, invalid=read.invalid) if read.invalid else key

    def is_active(self, now: float) -> bool:
        """Neither revoked nor expired at unix time ``now``, nor holding an invalid limit."""
        return self.state(now) == "active"

    def state(self, now: float) -> str:
        """``active``, ``revoked``, ``disabled`` (until enabled), ``expired`` or ``invalid`` (a stored
        limit no check lets in)."""
        if self.invalid:
            return "invalid"
        if self.revoked_at is not None:
            return "revoked"
        if self.disabled_at is not None:
            return "disabled"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def listed_state(self, now: float) -> str:
        """:meth:`state`, or ``exhausted`` for an active key whose token limit is reached this period."""
        state = self.state(now)
        if state == "active" and self.token_limit is not None and self.quota_used(now) >= self.token_limit:
            return "exhausted"
        return state

    def next_reset(self, now: float) -> float | None:
        """When the budget period's quota starts again from zero (``None``: lifetime budget)."""
        return None if self.budget_period is None else period_bounds(self.budget_period, now)[1]

    def allows_model(self, name: str) -> bool:
        """Whether the allow-list (if any) contains ``name``."""
        return self.allowed_models is None or name in self.allowed_models

    def allows_address(self, address: str | None) -> bool:
        """Whether the client address allow-list (if any) contains ``address`` (an unknown one: no)."""
        if self.allowed_cidrs is None:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in ipaddress.ip_network(cidr) for cidr in self.allowed_cidrs)

    def quota_used(self, now: float) -> int:
        """Tokens counted against the limit: the period's for a budget period (0 once it turned)."""
        if self.budget_period is None:
            return self.tokens_used
        start, _ = period_bounds(self.budget_period, now)
        return self.period_tokens_used if self.period_start == start else 0

    def public(self) -> dict[str, Any]:
        """The public fields (for pages, the JSON API and the audit log; never the hash)."""
        view = {name: getattr(self, name) for name in _PUBLIC_FIELDS}
        view["endpoint_counts"] = dict(self.endpoint_counts)
        view["allowed_models"] = None if self.allowed_models is None else list(self.allowed_models)
        view["allowed_cidrs"] = None if self.allowed_cidrs is None else list(self.allowed_cidrs)
        return view


_PUBLIC_FIELDS = (
    *("id", "public_id", "name", "last_four", "user_id", "created_at", "revoked_at", "disabled_at", "expires_at"),
    *("token_limit", "budget_period", "tokens_used", "tokens_reserved", "request_count", "last_request_at"),
    *("rpm_limit", "tpm_limit"),
)


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""Marks an :meth:`KeyRepository.update_key` argument that should stay as it is (``None`` clears)."""


def select_key(conn: sqlite3.Connection, ref: int | str) -> ApiKey | None:
    """The key with id ``ref`` (int) or public id ``ref`` (str), read on ``conn``."""
    column = "id" if isinstance(ref, int) else "public_id"
    row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = ?", (ref,)).fetchone()
    return None if row is None else ApiKey.from_row(row)


@dataclass(frozen=True)
class MintedKey:
    """A new key as the auth layer made it: the full key (shown once) and what is stored of it."""

    full_key: str
    public_id: str
    secret_hash: str = field(repr=False)
    last_four: str


KeyMinter = Callable[[], MintedKey]
"""Makes a new key (``proxy.auth.apikey.key_minter``); blocking (argon2), so run in a thread."""


class KeyRepository:
    """Create, read, change and revoke API keys through a :class:`Database`."""

    def __init__(self, db: Database, minter: KeyMinter) -> None:
        self._db = db
        self._mint = minter

    @property
    def db(self) -> Database:
        """The database the keys live in (for writes that go with a key change, e.g. the audit log)."""
        return self._db

    async def create_key(
        self,
        name: str,
        *,
        token_limit: int | None = None,
        allowed_models: Sequence[str] | None = None,
        expires_at: float | None = None,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
        user_id: int | None = None,
        budget_period: str | None = None,
        allowed_cidrs: Sequence[str] | None = None,
        by: Actor | None = None,
    ) -> tuple[str, ApiKey]:
        """A new key: ``(full_key, row)``. The full key is not stored anywhere; show it once.
        ``by``: the admin who asked, audited in the same transaction (``proxy.storage.audit``)."""
        values = check_key_fields(
            name=name,
            token_limit=token_limit,
            allowed_models=allowed_models,
            expires_at=expires_at,
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
            budget_period=budget_period,
            allowed_cidrs=allowed_cidrs,
        )
        minted = await asyncio.to_thread(self._mint)
        now = time.time()
        row = {
            **values,
            "public_id": minted.public_id,
            "secret_hash": minted.secret_hash,
            "last_four": minted.last_four,
            "user_id": user_id,
            "created_at": now,
            "updated_at": now,
        }

        def insert(conn: sqlite3.Connection) -> ApiKey:
            columns = ", ".join(row)
            marks = ", ".join(f":{c}" for c in row)
            sql = f"INSERT INTO api_keys ({columns}) VALUES ({marks}) RETURNING {KEY_COLUMNS}"
            return ApiKey.from_row(conn.execute(sql, row).fetchone())

        created = audited(by, insert, lambda key: Audit("api_key.create", f"key {key.id}", after=key.public()))
        return minted.full_key, await self._db.execute_write(created)

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

        def read(conn: sqlite3.Connection) -> list[ApiKey]:
            rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id")
            return [ApiKey.from_row(row) for row in rows]

        return await self._db.execute_read(read)

    async def get_key(self, ref: int | str) -> ApiKey | None:
        """The key with id ``ref`` (int) or public id ``ref`` (str), or ``None``."""
        return await self._db.execute_read(lambda conn: select_key(conn, ref))

    async def revoke_key(self, ref: int | str, *, by: Actor | None = None) -> ApiKey:
        """Revoke a key (idempotent: a second call keeps the first ``revoked_at``)."""
        now = time.time()
        column = "id" if isinstance(ref, int) else "public_id"
        sql = (
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?), updated_at = ? "
            f"WHERE {column} = ? RETURNING {KEY_COLUMNS}"
        )
        return await self._write_one(sql, (now, now, ref), ref, by, "api_key.revoke")

    async def set_disabled(self, ref: int | str, disabled: bool, *, by: Actor | None = None) -> ApiKey:
        """Disable a key (refused like a revoked one, idempotent) or enable it again. ``updated_at``
        moves, so every verifier reloads the key within a second (``proxy.auth.verifier``)."""
        now = time.time()
        column = "id" if isinstance(ref, int) else "public_id"
        sql = (
            "UPDATE api_keys SET disabled_at = CASE WHEN ? THEN COALESCE(disabled_at, ?) END, updated_at = ? "
            f"WHERE {column} = ? RETURNING {KEY_COLUMNS}"
        )
        action = "api_key.disable" if disabled else "api_key.enable"
        return await self._write_one(sql, (disabled, now, now, ref), ref, by, action)

    async def update_key(
        self,
        ref: int | str,
        *,
        name: str | _Unset = UNSET,
        token_limit: int | _Unset | None = UNSET,
        allowed_models: Sequence[str] | _Unset | None = UNSET,
        expires_at: float | _Unset | None = UNSET,
        rpm_limit: int | _Unset | None = UNSET,
        tpm_limit: int | _Unset | None = UNSET,
        budget_period: str | _Unset | None = UNSET,
        allowed_cidrs: Sequence[str] | _Unset | None = UNSET,
        by: Actor | None = None,
    ) -> ApiKey:
        """Change the given fields (``None`` clears a limit); untouched fields stay."""
        given = {
            "name": name,
            "token_limit": token_limit,
            "allowed_models": allowed_models,
            "expires_at": expires_at,
            "rpm_limit": rpm_limit,
            "tpm_limit": tpm_limit,
            "budget_period": budget_period,
            "allowed_cidrs": allowed_cidrs,
        }
        values = check_key_fields(**{k: v for k, v in given.items() if v is not UNSET})
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in values)
        column = "id" if isinstance(ref, int) else "public_id"
        sql = f"UPDATE api_keys SET {assignments} WHERE {column} = ? RETURNING {KEY_COLUMNS}"
        return await self._write_one(sql, (*values.values(), ref), ref, by, "api_key.update")

    async def _write_one(
        self, sql: str, params: Sequence[Any], ref: int | str, by: Actor | None, action: str
    ) -> ApiKey:
        """One key's change; audited with the key before and after, read in its transaction."""

        def write(conn: sqlite3.Connection) -> tuple[ApiKey | None, ApiKey | None]:
            before = select_key(conn, ref) if by is not None else None
            row = conn.execute(sql, params).fetchone()
            return before, None if row is None else ApiKey.from_row(row)

        def describe(change: tuple[ApiKey | None, ApiKey | None]) -> Audit | None:
            before, after = change
            if before is None or after is None:
                return None
            return Audit(action, f"key {after.id}", before.public(), after.public())

        _, key = await self._db.execute_write(audited(by, write, describe))
        if key is None:
            raise KeyNotFoundError(f"no API key {ref!r}")
        return key
