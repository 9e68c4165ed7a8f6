"""Verifying API keys: argon2id once per key, then a fast in-memory path.

A key whose secret verified is remembered under HMAC-SHA256(process-random key, whole key), so a
request with a known key costs one HMAC and one dict lookup. Cached keys never wait for argon2.
Concurrent verifications of one presented key share one run.

A first-time verification passes the key gate (:class:`~proxy.auth.gate.Argon2Gate`: its own
threads, a bound on what one client address may have in flight, one run per address at a time, the
threads to the addresses with the fewest recent failures first, so that a flood from one address or
forty cannot starve a new, valid key; a 429 or 503 at once beyond those bounds). An unknown public
id costs no argon2: the gate makes its refusal take as long as a real check, and it is counted like
a wrong secret, so neither the time, the answer nor the throttle tells which ids exist. A revoked or
expired key is judged only after its secret verified: without the secret nobody learns its state. A
presented key whose secret failed is remembered too (its HMAC, at most :data:`MAX_REFUSED`, all
forgotten whenever any key changes), so the same wrong key sent again is refused at once, known id
or not, without argon2 or a slow-down.

Failures are counted per (client address, public id) and per client address (:mod:`proxy.auth.throttle`).
Beyond a few a minute the verification is *slowed*, never refused: it waits :data:`SLOW_DELAY`
(holding one of its address's places in the gate, which bounds the address's rate), then runs; a
right secret is admitted, a wrong one answers :class:`~proxy.errors.ThrottledError` (429 with
``retry-after``, not 401). So guesses for a victim's public id from another address, or random keys
from the victim's own address (an office behind NAT), cost the victim at most a delay, never a
refusal. The throttle answers the same for known and unknown ids.

Revocation and changes made by any process reach every verifier within a second: triggers bump
``api_key_changes.version`` whenever a key is created, deleted or changed in a way that matters (not
on usage counters), and each verifier reads that one row at most every ``refresh_interval`` (0.5 s)
seconds, reloading the rows of its cached keys when the version moved (the reads are
:mod:`proxy.storage.key_lookup`'s).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from argon2 import PasswordHasher

from proxy.auth.apikey import parse_api_key
from proxy.auth.gate import Argon2Gate, GateStats
from proxy.auth.throttle import Throttle
from proxy.errors import AuthenticationError, ThrottledError
from proxy.storage.api_keys import ApiKey
from proxy.storage.database import Database
from proxy.storage.key_lookup import changed_keys, lookup_key

log = logging.getLogger(__name__)

FAILURES_PER_PAIR = 5  # unsuccessful first-time verifications per (client address, public id) per minute
FAILURES_PER_ADDRESS = 30  # ... and per client address
SLOW_DELAY = 2.0  # seconds a verification waits, beyond those, before it runs
PER_ADDRESS = 8  # first-time verifications one client address may have in flight
MAX_REFUSED = 10_000  # presented keys remembered as refused (until any key changes)


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
    refreshes: int = 0
    reloads: int = 0
    gate: GateStats = field(default_factory=GateStats)

    @property
    def argon2_runs(self) -> int:
        return self.gate.runs


class KeyVerifier:
    """Turns a raw API key into its :class:`ApiKey` row, or raises :class:`AuthenticationError`."""

    def __init__(
        self,
        db: Database,
        *,
        concurrency: int = 2,
        per_address: int = PER_ADDRESS,
        max_in_flight: int = 4096,
        refresh_interval: float = 0.5,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._db = db
        self._hmac_key = secrets.token_bytes(32)
        self.gate = Argon2Gate(
            "API key", concurrency=concurrency, per_address=per_address, max_in_flight=max_in_flight, hasher=hasher
        )
        self._interval = refresh_interval
        self._cache: dict[bytes, CachedKey] = {}
        self._refused: OrderedDict[bytes, str] = OrderedDict()  # digest -> reason, as of self._version
        self._by_pair = Throttle(FAILURES_PER_PAIR)
        self._by_address = Throttle(FAILURES_PER_ADDRESS)
        self._version = -1  # the api_key_changes version the cache reflects; no entry is older
        self._checked_at = -math.inf  # monotonic start time of the last completed version check
        self._refreshing: asyncio.Task[None] | None = None
        self._inflight: dict[bytes, asyncio.Task[ApiKey]] = {}
        self.stats = VerifierStats(gate=self.gate.stats)

    async def verify(self, raw_key: str, address: str | None = None) -> ApiKey:
        """The active key row for ``raw_key``; :class:`AuthenticationError` if refused,
        :class:`ThrottledError` or :class:`VerifierBusyError` when it must wait (see above).
        ``address``: the client's, for the gate and the throttle (None: counted as one address)."""
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
        refused = self._refused.get(digest)
        if refused is not None:
            raise AuthenticationError(refused)
        public_id, secret = parsed
        task = self._inflight.get(digest)
        if task is None:  # concurrent requests with the same key share one verification
            task = asyncio.ensure_future(self._first_time(digest, public_id, secret, address))
            self._inflight[digest] = task
            task.add_done_callback(lambda _: self._inflight.pop(digest, None))
        return _admit(await asyncio.shield(task))

    async def _first_time(self, digest: bytes, public_id: str, secret: str, address: str | None) -> ApiKey:
        """Through the gate; counted as a failure unless it succeeds, slowed when over the throttle."""
        async with self.gate.admitted(address) as bucket:
            pair = f"{bucket} {public_id}"
            slowed = self._by_pair.blocked(pair) or self._by_address.blocked(bucket)
            self._by_pair.attempt(pair)  # counted now, so that concurrent attempts see it
            self._by_address.attempt(bucket)
            if slowed:
                await asyncio.sleep(SLOW_DELAY)
            try:
                key = await self._verify_slow(bucket, digest, public_id, secret)
            except AuthenticationError as exc:
                if slowed and exc.reason in ("unknown key", "wrong secret"):
                    wait = max(self._by_pair.retry_after(pair), self._by_address.retry_after(bucket))
                    raise ThrottledError("too many failed verifications", retry_after=math.ceil(wait)) from None
                raise
            self._by_pair.succeeded(pair)
            self._by_address.succeeded(bucket)
            return key

    async def _verify_slow(self, bucket: str, digest: bytes, public_id: str, secret: str, attempts: int = 2) -> ApiKey:
        key, version = await lookup_key(self._db, public_id)
        priority = self._by_address.count(bucket)  # an address that keeps failing waits behind clean ones
        if (
            not await self.gate.check(bucket, key.secret_hash if key is not None else None, secret, priority)
            or key is None
        ):
            reason = "unknown key" if key is None else "wrong secret"
            if version >= self._version:  # else a key may have been made since: nothing to remember
                self._remember_refusal(digest, reason)
            raise AuthenticationError(reason)
        if not key.is_active(time.time()):
            raise AuthenticationError(f"{key.state(time.time())} key")
        if version >= self._version:
            self._cache[digest] = CachedKey(key.id, key, version, time.time())
        elif attempts > 1:  # the key changed while argon2 ran: judge the current row instead
            return await self._verify_slow(bucket, digest, public_id, secret, attempts - 1)
        return key

    def _remember_refusal(self, digest: bytes, reason: str) -> None:
        self._refused[digest] = reason
        if len(self._refused) > MAX_REFUSED:
            self._refused.popitem(last=False)

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
        version, keys = await changed_keys(self._db, known, ids)
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
        self._refused.clear()  # a refused key may exist now, or have a new secret
        log.debug("api key change %d: reloaded %d cached keys", version, len(fresh))


def _admit(key: ApiKey) -> ApiKey:
    if not key.is_active(time.time()):
        raise AuthenticationError(f"{key.state(time.time())} key")
    return key
