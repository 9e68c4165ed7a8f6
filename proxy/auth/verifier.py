"""Verifying API keys: argon2id once per key, then a fast in-memory path.

A key whose secret verified is remembered under HMAC-SHA256(process-random key, whole key), so a
request with a known key costs one HMAC and one dict lookup. Argon2 runs in threads, at most
``concurrency`` at a time and with at most ``max_waiting`` queued (beyond that
:class:`VerifierBusyError`, a 503 with ``retry-after``), so a flood of bad keys cannot starve good
traffic: cached keys never wait for argon2. Concurrent verifications of one presented key share one
run. Verifications that fail are throttled per public id and per client address
(:mod:`proxy.auth.throttle`): beyond a few a minute they are refused at once, without argon2.

An unknown public id looks like a wrong secret: same refusal, and the same cost, since its secret
is verified against a dummy hash made with the configured argon2 parameters (so the time a refusal
takes does not tell which ids exist). A revoked or expired key is judged only after its secret
verified: without the secret nobody learns its state. Nothing negative is cached: the throttle is
what keeps repeated refusals cheap.

Revocation and changes made by any process reach every verifier within a second: triggers bump
``api_key_changes.version`` whenever a key is created, deleted or changed in a way that matters (not
on usage counters), and each verifier reads that one row at most every ``refresh_interval`` (0.5 s)
seconds, reloading the rows of its cached keys when the version moved.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass

from argon2 import PasswordHasher

from proxy.auth.apikey import hash_secret, parse_api_key, verify_secret
from proxy.auth.throttle import Throttle
from proxy.errors import AuthenticationError, VerifierBusyError
from proxy.storage.api_keys import ApiKey, select_key, select_keys
from proxy.storage.database import Database

log = logging.getLogger(__name__)

FAILURES_PER_ID = 5  # unsuccessful first-time verifications per public id per minute
FAILURES_PER_ADDRESS = 30  # ... and per client address


@dataclass(frozen=True)
class CachedKey:
    """A verified key: its row as of ``version`` of ``api_key_changes``, and when it was cached."""

    api_key_id: int
    key: ApiKey
    version: int
    cached_at: float


@dataclass
class VerifierStats:
    hits: int = 0
    argon2_runs: int = 0
    refreshes: int = 0
    reloads: int = 0


class KeyVerifier:
    """Turns a raw API key into its :class:`ApiKey` row, or raises :class:`AuthenticationError`."""

    def __init__(
        self,
        db: Database,
        *,
        concurrency: int = 2,
        max_waiting: int = 32,
        refresh_interval: float = 0.5,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._db = db
        self._hmac_key = secrets.token_bytes(32)
        self._semaphore = asyncio.Semaphore(concurrency)
        self._max_waiting = max_waiting
        self._waiting = 0
        self._interval = refresh_interval
        self._cache: dict[bytes, CachedKey] = {}
        self._hasher = hasher
        self._dummy_hash: asyncio.Task[str] | None = None  # for unknown ids (see above); made on first need
        self._by_id = Throttle(FAILURES_PER_ID)
        self._by_address = Throttle(FAILURES_PER_ADDRESS)
        self._version = -1  # the api_key_changes version the cache reflects; no entry is older
        self._checked_at = -math.inf  # monotonic start time of the last completed version check
        self._refreshing: asyncio.Task[None] | None = None
        self._inflight: dict[bytes, asyncio.Task[ApiKey]] = {}
        self.stats = VerifierStats()

    async def verify(self, raw_key: str, address: str | None = None) -> ApiKey:
        """The active key row for ``raw_key``; :class:`AuthenticationError` if refused.
        ``address``: the client's, for the throttle (None: not throttled by address)."""
        parsed = parse_api_key(raw_key)
        if parsed is None:
            raise AuthenticationError("malformed key")
        if time.monotonic() - self._checked_at >= self._interval:
            await self._refresh()
        digest = hmac.digest(self._hmac_key, raw_key.encode(), "sha256")
        cached = self._cache.get(digest)
        if cached is not None:
            self.stats.hits += 1
            return _admit(cached.key)
        public_id, secret = parsed
        task = self._inflight.get(digest)
        if task is None:  # concurrent requests with the same key share one verification
            if self._by_id.blocked(public_id) or self._by_address.blocked(address):
                raise AuthenticationError("throttled")
            self._by_id.attempt(public_id)  # counted now, so that concurrent attempts see it
            self._by_address.attempt(address)
            task = asyncio.ensure_future(self._verify_counted(digest, public_id, secret, address))
            self._inflight[digest] = task
            task.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return _admit(await asyncio.shield(task))

    async def _verify_counted(self, digest: bytes, public_id: str, secret: str, address: str | None) -> ApiKey:
        """:meth:`_verify_slow`, its attempt (counted by the caller) given back if it succeeds."""
        key = await self._verify_slow(digest, public_id, secret)
        self._by_id.succeeded(public_id)
        self._by_address.succeeded(address)
        return key

    async def _verify_slow(self, digest: bytes, public_id: str, secret: str, attempts: int = 2) -> ApiKey:
        key, version = await self._db.execute_read(lambda conn: _read_key(conn, public_id))
        secret_hash = key.secret_hash if key is not None else await self._dummy()
        if not await self._check_secret(secret_hash, secret) or key is None:
            raise AuthenticationError("unknown key" if key is None else "wrong secret")
        if not key.is_active(time.time()):
            raise AuthenticationError(f"{key.state(time.time())} key")
        if version >= self._version:
            self._cache[digest] = CachedKey(key.id, key, version, time.time())
        elif attempts > 1:  # the key changed while argon2 ran: judge the current row instead
            return await self._verify_slow(digest, public_id, secret, attempts - 1)
        return key

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            made = asyncio.to_thread(hash_secret, secrets.token_urlsafe(24), self._hasher)
            self._dummy_hash = asyncio.ensure_future(made)
        return await asyncio.shield(self._dummy_hash)

    async def _check_secret(self, secret_hash: str, secret: str) -> bool:
        if self._waiting >= self._max_waiting:
            raise VerifierBusyError("too many API key verifications in progress; retry shortly")
        self._waiting += 1
        try:
            async with self._semaphore:
                self.stats.argon2_runs += 1
                return await asyncio.to_thread(verify_secret, secret_hash, secret)
        finally:
            self._waiting -= 1

    async def _refresh(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._check_version())
            self._refreshing.add_done_callback(self._refresh_done)
        await asyncio.shield(self._refreshing)

    def _refresh_done(self, _: asyncio.Task[None]) -> None:
        self._refreshing = None

    async def _check_version(self) -> None:
        started = time.monotonic()
        known = self._version
        ids = {entry.api_key_id for entry in self._cache.values()}
        version, keys = await self._db.execute_read(lambda conn: _read_changes(conn, known, ids))
        self.stats.refreshes += 1
        if keys is not None:
            self._apply(version, ids, keys)
        self._checked_at = started

    def _apply(self, version: int, ids: set[int], keys: list[ApiKey]) -> None:
        """Bring the cache to ``version``: fresh rows for the keys in ``ids``, and drop what is older."""
        self.stats.reloads += 1
        fresh = {key.id: key for key in keys}
        for digest, entry in list(self._cache.items()):
            key = fresh.get(entry.api_key_id)
            if entry.api_key_id not in ids:  # cached while the rows were read
                if entry.version < version:
                    del self._cache[digest]
            elif key is None or key.secret_hash != entry.key.secret_hash:  # deleted or new secret
                del self._cache[digest]
            else:
                self._cache[digest] = CachedKey(key.id, key, version, entry.cached_at)
        self._version = version
        log.debug("api key change %d: reloaded %d cached keys", version, len(fresh))


def _admit(key: ApiKey) -> ApiKey:
    if not key.is_active(time.time()):
        raise AuthenticationError(f"{key.state(time.time())} key")
    return key


def _read_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT version FROM api_key_changes WHERE id = 1").fetchone()
    return int(row[0]) if row is not None else 0


def _read_key(conn: sqlite3.Connection, public_id: str) -> tuple[ApiKey | None, int]:
    """The key and the change version it reflects, read in one snapshot."""
    conn.execute("BEGIN")
    try:
        return select_key(conn, public_id), _read_version(conn)
    finally:
        conn.execute("COMMIT")


def _read_changes(conn: sqlite3.Connection, known: int, ids: Collection[int]) -> tuple[int, list[ApiKey] | None]:
    """The current version, and the rows of ``ids`` if it differs from ``known``."""
    conn.execute("BEGIN")
    try:
        version = _read_version(conn)
        return version, (select_keys(conn, ids) if version != known else None)
    finally:
        conn.execute("COMMIT")
