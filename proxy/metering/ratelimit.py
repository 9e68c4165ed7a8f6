"""Per-key requests-per-minute and tokens-per-minute windows, in memory.

Each key has two token buckets: capacity = the per-minute limit, refilled continuously at
limit/60 per second (a sliding window without the memory of a request log). A request needs one
request and its estimated tokens (prompt + max_tokens, as OpenAI counts); it is admitted only if
both fit, and then both are taken. The decision carries what the OpenAI headers need
(``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, ``retry-after``).

The windows are per process (several proxy processes each allow the full rate); the durable,
cross-process limit is the token quota in ``proxy.storage.usage``. Use a limiter from its event loop only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class WindowState:
    """One bucket after the decision: its limit, what is left, and seconds until it is full."""

    limit: int
    remaining: int
    reset: float


@dataclass(frozen=True)
class RateDecision:
    """``allowed``, or when to retry. ``retry_after is None`` on a refusal means the request can
    never fit (its tokens exceed the per-minute limit itself)."""

    allowed: bool
    retry_after: float | None
    requests: WindowState | None
    tokens: WindowState | None

    def headers(self) -> dict[str, str]:
        """The OpenAI rate-limit headers (and ``retry-after`` on a refusal)."""
        headers: dict[str, str] = {}
        for kind, state in (("requests", self.requests), ("tokens", self.tokens)):
            if state is not None:
                headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
                headers[f"x-ratelimit-reset-{kind}"] = format_duration(state.reset)
        if not self.allowed and self.retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(self.retry_after)))
            headers["retry-after-ms"] = str(math.ceil(self.retry_after * 1000))
        return headers


class _Bucket:
    __slots__ = ("capacity", "level", "updated")

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.level = float(capacity)
        self.updated = now

    def refill(self, capacity: int, now: float) -> None:
        rate = capacity / WINDOW_SECONDS
        self.capacity = capacity
        self.level = min(float(capacity), self.level + (now - self.updated) * rate)
        self.updated = now

    def wait_for(self, amount: int) -> float | None:
        """Seconds until ``amount`` fits (0 if it does now, ``None`` if it never can)."""
        if amount > self.capacity:
            return None
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * WINDOW_SECONDS / self.capacity

    def state(self) -> WindowState:
        reset = (self.capacity - self.level) * WINDOW_SECONDS / self.capacity
        return WindowState(self.capacity, max(0, math.floor(self.level)), max(0.0, reset))


class RateLimiter:
    """The windows of every key seen by this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[int, str], _Bucket] = {}

    def check(self, api_key_id: int, *, rpm: int | None, tpm: int | None, tokens: int) -> RateDecision:
        """Admit one request of ``tokens`` estimated tokens, or say when to retry."""
        now = self._clock()
        request_bucket = self._bucket(api_key_id, "rpm", rpm, now)
        token_bucket = self._bucket(api_key_id, "tpm", tpm, now)
        wanted: list[tuple[_Bucket, int]] = []
        if request_bucket is not None:
            wanted.append((request_bucket, 1))
        if token_bucket is not None:
            wanted.append((token_bucket, tokens))
        waits = [bucket.wait_for(amount) for bucket, amount in wanted]
        allowed = all(wait == 0.0 for wait in waits)
        if allowed:
            for bucket, amount in wanted:
                bucket.level -= amount
        retry_after = 0.0 if allowed else _longest_wait(waits)
        return RateDecision(
            allowed=allowed,
            retry_after=retry_after,
            requests=None if request_bucket is None else request_bucket.state(),
            tokens=None if token_bucket is None else token_bucket.state(),
        )

    def _bucket(self, api_key_id: int, kind: str, limit: int | None, now: float) -> _Bucket | None:
        if limit is None:
            self._buckets.pop((api_key_id, kind), None)
            return None
        bucket = self._buckets.get((api_key_id, kind))
        if bucket is None:
            bucket = self._buckets[(api_key_id, kind)] = _Bucket(limit, now)
        else:
            bucket.refill(limit, now)
        return bucket


def _longest_wait(waits: list[float | None]) -> float | None:
    """The wait before every bucket fits; ``None`` if one of them never will."""
    if any(wait is None for wait in waits):
        return None
    return max(wait for wait in waits if wait is not None)


def format_duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"
