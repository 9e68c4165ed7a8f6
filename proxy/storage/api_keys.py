"""API keys: the row type and the repository that creates, lists, changes and revokes them.

Only the argon2id hash of a key's secret and its last four characters are stored; the full key
exists once, in the return value of :meth:`KeyRepository.create_key`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from proxy.storage.budget import PERIODS, period_bounds
from proxy.storage.database import Database
from proxy.storage.errors import KeyNotFoundError, ValidationError

KEY_COLUMNS = (
    "id, public_id, name, secret_hash, last_four, user_id, created_at, revoked_at, expires_at, token_limit, "
    "tokens_reserved, tokens_used, request_count, last_request_at, endpoint_counts, allowed_models, "
    "rpm_limit, tpm_limit, updated_at, budget_period, period_start, period_tokens_used, allowed_cidrs"
)
MAX_NAME_LENGTH = 200


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

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ApiKey:
        allowed = row["allowed_models"]
        return cls(
            id=row["id"],
            public_id=row["public_id"],
            name=row["name"],
            last_four=row["last_four"],
            user_id=row["user_id"],
            created_at=row["created_at"],
            revoked_at=row["revoked_at"],
            expires_at=row["expires_at"],
            token_limit=row["token_limit"],
            tokens_reserved=row["tokens_reserved"],
            tokens_used=row["tokens_used"],
            request_count=row["request_count"],
            last_request_at=row["last_request_at"],
            endpoint_counts=MappingProxyType(json.loads(row["endpoint_counts"] or "{}")),
            allowed_models=None if allowed is None else tuple(json.loads(allowed)),
            rpm_limit=row["rpm_limit"],
            tpm_limit=row["tpm_limit"],
            updated_at=row["updated_at"],
            secret_hash=row["secret_hash"],
            budget_period=row["budget_period"],
            period_start=row["period_start"],
            period_tokens_used=row["period_tokens_used"],
            allowed_cidrs=None if row["allowed_cidrs"] is None else tuple(json.loads(row["allowed_cidrs"])),
        )

    def is_active(self, now: float) -> bool:
        """Neither revoked nor expired at unix time ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def state(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

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


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
"""Marks an :meth:`KeyRepository.update_key` argument that should stay as it is (``None`` clears)."""


def select_key(conn: sqlite3.Connection, ref: int | str) -> ApiKey | None:
    """The key with id ``ref`` (int) or public id ``ref`` (str), read on ``conn``."""
    column = "id" if isinstance(ref, int) else "public_id"
    row = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE {column} = ?", (ref,)).fetchone()
    return None if row is None else ApiKey.from_row(row)


def select_keys(conn: sqlite3.Connection, ids: Iterable[int]) -> list[ApiKey]:
    """The keys with these ids (those that still exist)."""
    wanted = list(ids)
    keys: list[ApiKey] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id IN ({marks})", chunk)
        keys.extend(ApiKey.from_row(row) for row in rows)
    return keys


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
    ) -> tuple[str, ApiKey]:
        """A new key: ``(full_key, row)``. The full key is not stored anywhere; show it once."""
        values = _check_fields(
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

        return minted.full_key, await self._db.execute_write(insert)

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

        def read(conn: sqlite3.Connection) -> list[ApiKey]:
            rows = conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id")
            return [ApiKey.from_row(row) for row in rows]

        return await self._db.execute_read(read)

    async def get_key(self, ref: int | str) -> ApiKey | None:
        """The key with id ``ref`` (int) or public id ``ref`` (str), or ``None``."""
        return await self._db.execute_read(lambda conn: select_key(conn, ref))

    async def revoke_key(self, ref: int | str) -> ApiKey:
        """Revoke a key (idempotent: a second call keeps the first ``revoked_at``)."""
        now = time.time()
        column = "id" if isinstance(ref, int) else "public_id"
        sql = (
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?), updated_at = ? "
            f"WHERE {column} = ? RETURNING {KEY_COLUMNS}"
        )
        return await self._write_one(sql, (now, now, ref), ref)

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
        values = _check_fields(**{k: v for k, v in given.items() if v is not UNSET})
        values["updated_at"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in values)
        column = "id" if isinstance(ref, int) else "public_id"
        sql = f"UPDATE api_keys SET {assignments} WHERE {column} = ? RETURNING {KEY_COLUMNS}"
        return await self._write_one(sql, (*values.values(), ref), ref)

    async def _write_one(self, sql: str, params: Sequence[Any], ref: int | str) -> ApiKey:
        def write(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
            return row

        row = await self._db.execute_write(write)
        if row is None:
            raise KeyNotFoundError(f"no API key {ref!r}")
        return ApiKey.from_row(row)


def _check_fields(**fields: Any) -> dict[str, Any]:
    """Validate the given key fields and turn them into column values (:class:`ValidationError`)."""
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "name":
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
                raise ValidationError(f"a key name must be 1 to {MAX_NAME_LENGTH} characters")
            value = value.strip()
        elif name == "allowed_models" and value is not None:
            models = [str(m).strip() for m in value]
            if not models or not all(models):
                raise ValidationError("the model allow-list must name at least one model, without blanks")
            value = json.dumps(sorted(set(models)))
        elif name == "budget_period" and value is not None and value not in PERIODS:
            raise ValidationError(f"a budget period must be one of {', '.join(PERIODS)}")
        elif name == "allowed_cidrs" and value is not None:
            value = json.dumps(_check_cidrs(value))
        elif name == "token_limit" and value is not None:
            value = _int_at_least(name, value, 0)
        elif name in ("rpm_limit", "tpm_limit") and value is not None:
            value = _int_at_least(name, value, 1)
        elif name == "expires_at" and value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValidationError("expires_at must be a unix time in seconds")
            value = float(value)
        values[name] = value
    return values


def _check_cidrs(values: Sequence[str]) -> list[str]:
    """Normalised networks (``10.0.0.0/8``, ``2001:db8::/32``, a bare address = one host)."""
    networks: list[str] = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(str(value).strip(), strict=False)))
        except ValueError:
            raise ValidationError(f"{str(value)[:60]!r} is not an IP address or CIDR network") from None
    if not networks:
        raise ValidationError("the client address allow-list must name at least one network")
    return sorted(set(networks))


def _int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValidationError(f"{name} must be an integer of at least {low}")
    return value
