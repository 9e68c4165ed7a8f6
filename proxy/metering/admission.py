"""Admission: may this key run this request now? Model allow-list and existence, rate windows, quota.

Refusals are :class:`~proxy.errors.ApiError`s; the caller (the generation) records them as
unbilled rows. An admitted request gets a :class:`Ticket`: its rate-limit headers, its quota
reservation, and how many tokens it may generate (capped at what the key has left).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.errors import ApiError
from proxy.metering.ratelimit import RateLimiter
from proxy.storage.api_keys import ApiKey
from proxy.storage.database import Database
from proxy.storage.usage import QuotaExceeded, Reservation, reserve
from proxy.upstream import ModelCatalog


@dataclass(frozen=True)
class Ticket:
    """An admitted request: what it may generate and what it holds."""

    max_tokens: int
    reservation: Reservation | None = None
    rate_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Admission:
    db: Database
    catalog: ModelCatalog
    limiter: RateLimiter

    async def admit(self, key: ApiKey, model: str, prompt_tokens: int, max_tokens: int) -> Ticket:
        """Check model, windows and quota, in that order; an ApiError says why not."""
        await self._check_model(key, model)
        headers = self._check_windows(key, prompt_tokens + max_tokens)
        if key.token_limit is None:
            return Ticket(max_tokens, None, headers)
        reservation = await self._reserve(key, prompt_tokens, max_tokens)
        return Ticket(reservation.tokens - prompt_tokens, reservation, headers)

    async def _check_model(self, key: ApiKey, model: str) -> None:
        if not key.allows_model(model):
            raise ApiError(
                403,
                f"this API key may not use the model '{model}'",
                type="permission_error",
                code="model_not_allowed",
                param="model",
            )
        if not await self.catalog.has(model):
            raise ApiError(404, f"The model '{model}' does not exist", code="model_not_found", param="model")

    def _check_windows(self, key: ApiKey, tokens: int) -> dict[str, str]:
        if key.rpm_limit is None and key.tpm_limit is None:
            return {}
        decision = self.limiter.check(key.id, rpm=key.rpm_limit, tpm=key.tpm_limit, tokens=tokens)
        if not decision.allowed:
            which = "tokens" if decision.tokens and decision.tokens.remaining < tokens else "requests"
            raise ApiError(
                429,
                f"Rate limit reached for {which} per minute on this API key",
                type="requests" if which == "requests" else "tokens",
                code="rate_limit_exceeded",
                headers=decision.headers(),
            )
        return decision.headers()

    async def _reserve(self, key: ApiKey, prompt_tokens: int, max_tokens: int) -> Reservation:
        """Reserve prompt + max_tokens, or as much as is left if the prompt and one token fit (an
        embeddings request, with nothing to generate, needs its prompt only)."""
        minimum = prompt_tokens + min(1, max_tokens)
        result = await reserve(self.db, key.id, prompt_tokens + max_tokens, minimum=minimum)
        if isinstance(result, QuotaExceeded):
            raise ApiError(
                429,
                f"You exceeded your current quota: {result.message}",
                type="insufficient_quota",
                code="insufficient_quota",
                headers={"x-should-retry": "false"},
            )
        return result
