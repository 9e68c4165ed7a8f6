"""Admission: may this key run this request now? Model allow-list and existence, rate windows, quota.

One :class:`Admission` serves every metered request; what "this model exists" means is the request's
:class:`KnownModels`: the runtime's models for text (:class:`RuntimeModels`), one resolved speech
model for speech. A model the runtime does not serve is 404, unless it is registered and wanted
running: then it is on its way (reloading after a restart, loading, downloading) and the answer is
503 with ``retry-after`` (:meth:`RuntimeModels.unserved`, also for the runtime's own ``unknown_model``).

Refusals are :class:`~proxy.errors.ApiError`s; the caller (the generation) records them as
unbilled rows. An admitted request gets a :class:`Ticket`: its rate-limit headers, its quota
reservation, and how many tokens it may generate (capped at what the key has left).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timezone
from typing import Protocol
from zoneinfo import ZoneInfo

from proxy.errors import ApiError, unavailable
from proxy.metering.ratelimit import RateLimiter
from proxy.metering.request import check_model_length
from proxy.storage.api_keys import ApiKey
from proxy.storage.budget import format_reset
from proxy.storage.database import Database
from proxy.storage.usage import QuotaExceeded, Reservation, reserve
from proxy.upstream import ModelCatalog

LOADING_RETRY_AFTER = 2  # seconds a client waits before asking again for a model that is loading
CONTEXT_MARGIN = 1.5  # cl100k_base tokens per model token, at most, for the context check


@dataclass(frozen=True)
class Ticket:
    """An admitted request: what it may generate and what it holds."""

    max_tokens: int
    reservation: Reservation | None = None
    rate_headers: dict[str, str] = field(default_factory=dict)


class KnownModels(Protocol):
    """What admission asks of the models a request may name."""

    async def has(self, name: str) -> bool:
        """Whether ``name`` can serve this request now (it may raise an ApiError saying why it
        cannot, e.g. a speech model of the wrong kind)."""
        ...

    def serves(self, name: str) -> bool:
        """Whether ``name`` is a known model, without a round trip (for ledger and metric labels)."""
        ...

    def context(self, name: str) -> int | None:
        """The model's context length in its own tokens, if known (after ``has``)."""
        ...

    async def unserved(self, name: str) -> ApiError:
        """The error for ``name`` when ``has`` said no."""
        ...


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model '{model}' does not exist", code="model_not_found", param="model")


@dataclass
class RuntimeModels:
    """The models the runtime serves, as admission sees them, with the model lifecycle's two hooks."""

    catalog: ModelCatalog
    # Notes the use, loads a model unloaded for idleness (True then).
    warm: Callable[[str], Awaitable[bool]] | None = None
    # What a model that is registered and wanted running is doing (it is coming: 503), None for
    # any other name (404).
    starting: Callable[[str], Awaitable[str | None]] | None = None

    async def has(self, name: str) -> bool:
        return (self.warm is not None and await self.warm(name)) or await self.catalog.has(name)

    def serves(self, name: str) -> bool:
        return self.catalog.serves(name)

    def context(self, name: str) -> int | None:
        return self.catalog.context(name)

    async def unserved(self, name: str) -> ApiError:
        """The error for a model the runtime does not serve now (at admission, or the runtime's own
        ``unknown_model``): 503 with ``retry-after`` while a model wanted running is on its way (after
        a restart, while it loads: the SDKs retry a 503, never a 404), 404 for any other name."""
        doing = None if self.starting is None else await self.starting(name)
        if doing is not None:
            return unavailable(f"The model '{name}' is {doing}; retry shortly", retry_after=LOADING_RETRY_AFTER)
        return model_not_found(name)


@dataclass
class Admission:
    """Admission's state, shared by every metered request: the ledger's database, the rate windows."""

    db: Database
    limiter: RateLimiter
    zone: ZoneInfo | timezone = timezone.utc  # budget periods are aligned in this time zone

    async def admit(
        self,
        key: ApiKey,
        models: KnownModels,
        model: str,
        prompt_tokens: int,
        max_tokens: int,
        *,
        one_context: bool = False,
    ) -> Ticket:
        """Check model (in ``models``), context (``one_context``: the prompt must fit in one),
        windows and quota, in that order; an ApiError says why not."""
        check_model_length(model)  # the fronts check it when parsing; this is the owner's backstop
        self._check_ledger()
        await self._check_model(key, models, model)
        if one_context:
            self._check_context(models, model, prompt_tokens)
        headers = self._check_windows(key, prompt_tokens + max_tokens)
        if key.token_limit is None:
            return Ticket(max_tokens, None, headers)
        reservation = await self._reserve(key, prompt_tokens, max_tokens)
        return Ticket(reservation.tokens - prompt_tokens, reservation, headers)

    def _check_ledger(self) -> None:
        """No request runs while its usage row could not be written (a full disk): a 503 before it
        starts, not a stream cut after 41 tokens with no row (issue 18)."""
        why = self.db.unwritable()
        if why is not None:
            raise ApiError(
                503,
                f"the usage ledger cannot be written right now ({why}); retry shortly",
                type="server_error",
                code="service_unavailable",
                headers={"retry-after": "5"},
            )

    async def _check_model(self, key: ApiKey, models: KnownModels, model: str) -> None:
        if not key.allows_model(model):
            raise ApiError(
                403,
                f"this API key may not use the model '{model}'",
                type="permission_error",
                code="model_not_allowed",
                param="model",
            )
        if not await models.has(model):
            raise await models.unserved(model)

    def _check_context(self, models: KnownModels, model: str, prompt_tokens: int) -> None:
        """A prompt that cannot fit the model's context is refused here, before any queue (issue 25:
        Open WebUI's 6,593-token "Hello" waited 10-102 s behind other requests for the model's 400).

        ``prompt_tokens`` is the cl100k_base count, not the model's: the bound allows for a model
        tokenizer up to :data:`CONTEXT_MARGIN` times as frugal as cl100k_base, so a prompt that fits
        is never refused here. A prompt between the two is refused by the runtime, as before."""
        context = models.context(model)
        if context is not None and prompt_tokens > context * CONTEXT_MARGIN:
            raise ApiError(
                400,
                f"This model's maximum context length is {context} tokens; the messages are about "
                f"{prompt_tokens} tokens. Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )

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
        """Reserve prompt + max_tokens, or as much as is left if the prompt and one token fit (a request
        with nothing to generate, speech or embeddings, needs its prompt only)."""
        least = prompt_tokens + min(1, max_tokens)
        result = await reserve(self.db, key.id, prompt_tokens + max_tokens, minimum=least, zone=self.zone)
        if isinstance(result, QuotaExceeded):
            raise ApiError(
                429,
                f"You exceeded your current quota: {result.message}",
                type="insufficient_quota",
                code="insufficient_quota",
                headers=_quota_headers(result),
            )
        return result


def _quota_headers(result: QuotaExceeded) -> dict[str, str]:
    """No retry for a cumulative quota; a budget period says when it resets (seconds, and the time)."""
    if result.resets_at is None:
        return {"x-should-retry": "false"}
    wait = max(1, int(result.resets_at - time.time() + 0.999))
    return {"x-should-retry": "false", "retry-after": str(wait), "x-budget-resets-at": format_reset(result.resets_at)}
