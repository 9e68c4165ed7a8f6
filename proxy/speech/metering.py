"""One speech request from admission to its ledger row: the same one-owner guarantee as a text
generation (``proxy.metering.generation``), with speech's own billing.

:meth:`SpeechCalls.run` is an async context manager around everything a speech request does::

    async with calls.run(key, model, name, kind, endpoint, ids, prompt_tokens, max_tokens) as call:
        ...                       # the upstream call; call.ran() once it produced something
        await call.finish()       # the normal end: the row is committed before the response ends

Its exit is the only place a usage row is written, whatever ends the request: a refusal at
admission (allow-list, unknown model, wrong kind, windows, quota), an upstream error, the client
going away, a bug, cancellation at shutdown. The write is shielded from cancellation; if it fails
the reservation is released and the failure counted and logged.

Billing: a request refused or not run (the upstream produced nothing) costs nothing. Speech costs
its ``input`` tokens only; a transcription costs its transcript's tokens as completion tokens and
records the audio's duration in ``audio_seconds``. A transcript is billed in full, even past its
reservation (a guess from the audio's duration): text is capped at its reservation because the model
was told to stop there, but nothing tells the upstream how long a transcript may be, so the cap billed
a 59,000-token transcript as 72 on a quota key and 59,000 on an unlimited one (issue 18). Settling
above the reservation leaves the key over its limit, and its next request is refused.

The ledger and the metrics name the model only when it is the registered model this request resolved
to; any other name is ``(unknown)`` (a refused request's name is the client's invention).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timezone
from typing import TypeVar
from zoneinfo import ZoneInfo

from proxy.errors import ApiError
from proxy.metering.admission import Admission, Ticket
from proxy.metering.generation import UNKNOWN_MODEL, RequestIds
from proxy.metering.ratelimit import RateLimiter
from proxy.metering.settle import outcome, settle_usage, write_once
from proxy.metering.tokens import count_text_off_loop
from proxy.metrics import Metrics
from proxy.speech.catalog import KIND_NAMES, SpeechModel
from proxy.storage.api_keys import ApiKey
from proxy.storage.database import Database
from proxy.storage.usage import UsageEvent

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class SpeechCalls:
    """What every speech request needs; :meth:`run` makes one."""

    db: Database
    limiter: RateLimiter  # shared with the text endpoints: one key, one set of windows
    metrics: Metrics
    zone: ZoneInfo | timezone = timezone.utc  # budget periods align here, as on the text path
    _live: set[SpeechCall] = field(default_factory=set)

    async def drain(self, timeout: float) -> None:
        """At shutdown: wait (bounded) until every live request has written its row."""
        end = time.monotonic() + timeout
        while self._live and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if self._live:
            log.error("%d speech request(s) still running at shutdown", len(self._live))

    @asynccontextmanager
    async def run(
        self,
        key: ApiKey,
        model: SpeechModel | None,
        name: str,
        kind: str,
        endpoint: str,
        ids: RequestIds,
        prompt_tokens: int,
        max_tokens: int,
    ) -> AsyncIterator[SpeechCall]:
        expected = _Expected(model, kind)
        label = name if expected.serves(name) else UNKNOWN_MODEL  # never a name a client made up
        call = SpeechCall(self, key, label, endpoint, ids, prompt_tokens)
        self.metrics.inflight.inc()
        self._live.add(call)
        try:
            admission = Admission(self.db, expected, self.limiter, zone=self.zone)
            try:
                call.ticket = await admission.admit(key, name, prompt_tokens, max_tokens)
            except ApiError:
                call.refused = True
                raise
            yield call
        except BaseException as exc:
            await call.end(exc)
            raise
        else:
            await call.end(None)
        finally:
            self.metrics.inflight.dec()
            self._live.discard(call)


@dataclass
class _Expected:
    """Admission's catalog for one speech request: the model exists, is of the endpoint's kind and
    is running (asked after the key's allow-list, before its windows and quota)."""

    model: SpeechModel | None
    kind: str

    def serves(self, name: str) -> bool:
        return self.model is not None and self.model.name == name

    def context(self, name: str) -> int | None:
        return None  # a remote speech model's input is bounded by its endpoint

    async def has(self, name: str) -> bool:
        model = self.model
        if model is None:
            return False
        if model.kind != self.kind:
            raise ApiError(
                400,
                f"the model '{name}' is a {KIND_NAMES[model.kind]} model; this endpoint needs a "
                f"{KIND_NAMES[self.kind]} model",
                param="model",
                code="wrong_model_kind",
            )
        if not model.running:
            raise ApiError(
                503,
                f"the model '{name}' is stopped; an administrator can start it (llmserver models start {name})",
                type="server_error",
                code="model_not_running",
            )
        return True


@dataclass(eq=False)
class SpeechCall:
    """One speech request. ``end`` writes its row exactly once, whoever calls it first."""

    service: SpeechCalls
    key: ApiKey
    model: str
    endpoint: str
    ids: RequestIds
    prompt_tokens: int
    started: float = field(default_factory=time.perf_counter)
    ticket: Ticket | None = None
    refused: bool = False
    completion_tokens: int = 0  # a transcript's tokens, set by :meth:`transcribed`
    audio_seconds: float | None = None
    streamed: bool = False
    first_byte_ms: float | None = None
    _ran: bool = False
    _recorded: bool = False

    @property
    def rate_headers(self) -> dict[str, str]:
        return self.ticket.rate_headers if self.ticket else {}

    def ran(self) -> None:
        """The upstream produced something (audio or a transcript): the request is billable."""
        self._ran = True
        if self.first_byte_ms is None:
            self.first_byte_ms = (time.perf_counter() - self.started) * 1000

    async def transcribed(self, text: str) -> None:
        """A transcript arrived: billable, its tokens counted in full (off the event loop when large)."""
        self.completion_tokens = await count_text_off_loop(text)
        self.ran()

    async def finish(self) -> None:
        await self.end(None)

    async def end(self, exc: BaseException | None) -> None:
        """Write this request's row (once), with the status ``exc`` means; shielded from cancellation."""
        if self._recorded:
            return
        self._recorded = True
        status, disconnected = outcome(exc)
        await write_once(self._record(status, disconnected), exc)

    async def _record(self, status: int, disconnected: bool) -> ApiError | None:
        billed = self._ran and not self.refused
        prompt, completion = (self.prompt_tokens, self.completion_tokens) if billed else (0, 0)
        latency_ms = (time.perf_counter() - self.started) * 1000
        event = UsageEvent(
            request_id=self.ids.server,
            client_request_id=self.ids.client,
            api_key_id=self.key.id,
            model=self.model,
            endpoint=self.endpoint,
            prompt_tokens=prompt,
            completion_tokens=completion,
            status=status,
            latency_ms=round(latency_ms, 3),
            ttft_ms=round(self.first_byte_ms, 3) if self.first_byte_ms is not None else None,
            streamed=self.streamed,
            client_disconnected=disconnected,
            audio_seconds=self.audio_seconds if billed else None,
        )
        reservation = self.ticket.reservation if self.ticket else None
        service = self.service
        return await settle_usage(service.db, service.metrics, event, reservation, latency_ms, self.first_byte_ms)


def admitted(model: SpeechModel | None) -> SpeechModel:
    """The model of an admitted request (admission refuses an unknown one with a 404, so this only narrows)."""
    if model is None:
        raise ApiError(404, "The model does not exist", code="model_not_found", param="model")
    return model
