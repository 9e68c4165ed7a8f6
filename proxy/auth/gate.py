"""Fair, bounded argon2 verifications: one gate per kind of caller (API keys, console logins).

Argon2 costs about 0.2 s of CPU and 64 MiB per run, so anonymous traffic must not be able to queue
it without bound, nor starve the callers whose secrets are right. A gate bounds the work per client
address *before* any argon2:

- at most ``per_address`` verifications of one address in flight (waiting or running); beyond that
  :class:`~proxy.errors.ThrottledError` at once (a 429 with ``retry-after``);
- one verification of an address at a time: its others wait behind it, so one address (or forty)
  holds at most one place each in the queue for the threads;
- the threads go to the waiting verification with the lowest ``priority`` first (the caller's
  count of its address's recent failures), so a new, valid key from a clean address waits for the
  runs in progress only, never for a flood from addresses that keep failing;
- at most ``max_in_flight`` verifications in flight over all addresses (memory), beyond that
  :class:`~proxy.errors.VerifierBusyError` (a 503);
- its own ``concurrency`` threads, so argon2's memory is bounded (threads x 64 MiB) and a flood at one
  gate (console logins) never delays another (API keys), nor anything else that uses
  ``asyncio.to_thread``.

A secret with no hash to check (an unknown public id, an unknown user name) costs no argon2: the
caller still passes the gate, waits its turn like a real verification and then waits as long as a
recent real run took (:meth:`Argon2Gate.verify` with ``secret_hash=None``), so neither the answer,
the limits nor the time tell which ids or names exist. (Under contention a real run also holds a
thread that a pretended one does not; what that could tell needs a flood of real runs elsewhere.)
IPv6 clients are counted per /64, the block one subscriber usually holds.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import itertools
import logging
import secrets
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from argon2 import PasswordHasher

from proxy.auth.apikey import hash_secret, verify_secret
from proxy.errors import ThrottledError, VerifierBusyError

log = logging.getLogger(__name__)

RECENT_RUNS = 16  # how many real run times the pretended ones imitate (their median)


@dataclass
class GateStats:
    """Counters for ``/metrics`` and the soak figures."""

    runs: int = 0  # argon2 verifications that ran
    pretended: int = 0  # verifications of an unknown id or name (no argon2)
    refused_address: int = 0  # over an address's limit (429)
    refused_busy: int = 0  # over the gate's limit (503)


class Argon2Gate:
    """Verify secrets against argon2 hashes, bounded per client address and in all (see above)."""

    def __init__(
        self,
        name: str,
        *,
        concurrency: int = 2,
        per_address: int = 8,
        max_in_flight: int = 4096,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.name = name
        self.per_address = per_address
        self.max_in_flight = max_in_flight
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=f"argon2-{name}")
        self._threads = PrioritySlots(concurrency)
        self._hasher = hasher
        self._in_flight: dict[str, int] = {}
        self._turns: dict[str, asyncio.Lock] = {}
        self._total = 0
        self._recent: deque[float] = deque(maxlen=RECENT_RUNS)
        self._calibrated: asyncio.Task[None] | None = None
        self.stats = GateStats()

    async def verify(self, address: str | None, secret_hash: str | None, secret: str, priority: int = 0) -> bool:
        """Whether ``secret`` matches ``secret_hash`` (None: there is nothing to match; False after
        the time a real check takes). :class:`ThrottledError` or :class:`VerifierBusyError` at once
        when ``address`` or the gate has too much in flight."""
        async with self.admitted(address) as bucket:
            return await self.check(bucket, secret_hash, secret, priority)

    @asynccontextmanager
    async def admitted(self, address: str | None) -> AsyncIterator[str]:
        """A place in flight for ``address`` (its bucket for :meth:`check`), or a refusal at once."""
        bucket = address_bucket(address)
        if self._total >= self.max_in_flight:
            self.stats.refused_busy += 1
            raise VerifierBusyError(f"too many {self.name} verifications in progress; retry shortly")
        if self._in_flight.get(bucket, 0) >= self.per_address:
            self.stats.refused_address += 1
            raise ThrottledError("too many verifications from this address at once", retry_after=1)
        self._total += 1
        self._in_flight[bucket] = self._in_flight.get(bucket, 0) + 1
        try:
            yield bucket
        finally:
            self._total -= 1
            left = self._in_flight[bucket] - 1
            if left:
                self._in_flight[bucket] = left
            else:
                del self._in_flight[bucket]
                self._turns.pop(bucket, None)

    async def check(self, bucket: str, secret_hash: str | None, secret: str, priority: int = 0) -> bool:
        """The check itself, for a caller inside :meth:`admitted`: its address's turn, then a thread
        (lowest ``priority`` first)."""
        if secret_hash is None:
            await self._calibrate()
        turn = self._turns.setdefault(bucket, asyncio.Lock())
        async with turn:
            if secret_hash is None:
                async with self._threads.held(priority):  # waits its turn like a real run, holds no thread
                    pass
                self.stats.pretended += 1
                await asyncio.sleep(self.typical_run())
                return False
            async with self._threads.held(priority):
                return await self._run(secret_hash, secret)

    def typical_run(self) -> float:
        """The median time of the recent real runs (what a pretended one waits)."""
        return statistics.median(self._recent) if self._recent else 0.0

    async def _run(self, secret_hash: str, secret: str) -> bool:
        self.stats.runs += 1
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, verify_secret, secret_hash, secret)
        finally:
            self._recent.append(time.perf_counter() - started)

    async def _calibrate(self) -> None:
        """One real run of a throwaway hash before the first pretended one (nothing to imitate yet)."""
        if self._recent:
            return
        if self._calibrated is None:
            self._calibrated = asyncio.ensure_future(self._calibration())
        await asyncio.shield(self._calibrated)

    async def _calibration(self) -> None:
        loop = asyncio.get_running_loop()
        dummy = await loop.run_in_executor(self._pool, hash_secret, secrets.token_urlsafe(24), self._hasher)
        async with self._threads.held(0):
            await self._run(dummy, secrets.token_urlsafe(24))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class PrioritySlots:
    """``n`` slots, granted to the waiter with the lowest priority first, then first come."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def held(self, priority: int) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        entry = (priority, next(self._order), asyncio.get_running_loop().create_future())
        heapq.heappush(self._waiters, entry)
        try:
            await entry[2]
        except asyncio.CancelledError:
            if entry[2].done() and not entry[2].cancelled():  # granted as it was cancelled: pass it on
                self._release()
            elif entry in self._waiters:
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def _release(self) -> None:
        while self._waiters:
            waiter = heapq.heappop(self._waiters)[2]
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


def address_bucket(address: str | None) -> str:
    """What the per-address limits count under: the address, an IPv6 address's /64, "" for none."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)
