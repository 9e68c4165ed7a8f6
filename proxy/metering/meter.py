"""The one owner of every metered request, whatever its front and its upstream.

Text generations, embeddings, the tokenizer's requests (``proxy.metering.generation``), speech and
transcription (``proxy.speech.call``) are each a :class:`MeteredCall`, an async context manager::

    async with call:              # admitted on entry (refusals raise, after their row is written)
        ...                       # the upstream call: call.produced() when output arrives
        await call.finish()       # the normal end: the row is committed before the answer ends

Here, and only here: admission (key's allow-list, the model, rate windows, quota reservation), the
time to first output, the single usage row, the metrics, the access line, and the shutdown drain
(:meth:`Meter.drain`). A kind of request says two things of its own, both asked by :meth:`end`:
:meth:`~MeteredCall.release` lets go of its upstream before the row is written (a runtime stream is
aborted), :meth:`~MeteredCall.usage` says what the upstream made. Neither calls back here. The owner
knows no wire format: a front (OpenAI's JSON and SSE, speech; Ollama's NDJSON next) runs a call and
writes its own bytes.

Its exit is the only place a usage row is written. Whatever ends the request passes there: a normal
end, a refusal, an upstream error, a client gone, an unexpected exception in the front (a bug in a
chunk writer) and cancellation at shutdown. The write is shielded from cancellation, and if it
fails the reservation is released, the failure counted and logged, and the client told
(:mod:`proxy.metering.settle`).

Billing (:meth:`MeteredCall.billed`): a request the server refused or whose upstream produced
nothing costs nothing; otherwise its prompt plus what :meth:`usage` says it made. What is billed is
what was delivered: a buffered answer that ends in an error (the request's deadline, 504; the
runtime gone, 502) delivered nothing and costs nothing (issue 25), while the row keeps the runtime's
own counts of what was made. A client that leaves is billed for what was made, streamed or not.

The ledger and the metrics name the model only when the request's :class:`KnownModels` serve it;
any other name is :data:`UNKNOWN_MODEL` (issue 14: a client's 900 KB names each became a ledger
value and a label). The access line names the model as the client asked for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

from proxy import accesslog
from proxy.errors import ApiError
from proxy.metering.admission import Admission, KnownModels, Ticket
from proxy.metering.settle import outcome, write_usage
from proxy.metrics import Metrics
from proxy.request_ids import RequestIds
from proxy.storage.api_keys import ApiKey
from proxy.storage.database import Database
from proxy.storage.usage import UsageEvent
from proxy.upstream import runtime_error
from runtime.api.errors import RuntimeClientError

log = logging.getLogger(__name__)

C = TypeVar("C", bound="MeteredCall")

UNKNOWN_MODEL = "(unknown)"  # the ledger's and the metrics' name for a model the request's catalog does not serve


@dataclass(frozen=True)
class Usage:
    """What a request's upstream made, in the kind's own terms (asked once, at the end)."""

    completion_tokens: int = 0  # in the billing unit (cl100k_base)
    runtime_prompt_tokens: int | None = None  # the runtime's exact counts, kept beside them
    runtime_completion_tokens: int | None = None
    audio_seconds: float | None = None  # a transcription's audio


@dataclass
class Meter:
    """What every metered request needs, and the requests still running (for the shutdown drain)."""

    db: Database
    admission: Admission
    metrics: Metrics
    _live: set[MeteredCall] = field(default_factory=set)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def drain(self, timeout: float) -> int:
        """At shutdown, before the database closes: wait until every live request has written its
        row (a handler cancelled by the server's shutdown writes it as it unwinds); how many did not."""
        if self._live:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                log.error("%d request(s) still running at shutdown after %.0f s", len(self._live), timeout)
        return len(self._live)

    def _enter(self, call: MeteredCall) -> None:
        self.metrics.inflight.inc()
        self._live.add(call)

    def _leave(self, call: MeteredCall) -> None:
        self.metrics.inflight.dec()
        self._live.discard(call)
        if not self._live:
            self._idle.set()


@dataclass(eq=False, kw_only=True)
class MeteredCall:
    """One metered request. ``end`` writes its row exactly once, whoever calls it first."""

    meter: Meter
    key: ApiKey
    endpoint: str
    ids: RequestIds
    model: str  # as the client named it
    models: KnownModels  # what "this model exists" means for this request
    prompt_tokens: int = 0  # in the billing unit; a kind may count it in :meth:`prepare`
    max_tokens: int = 0  # what it may make, reserved with the prompt
    one_context: bool = False  # the prompt must fit in the model's context
    streamed: bool = False  # the answer is (being) streamed: what was made before a failure was delivered
    started: float = field(default_factory=time.perf_counter)
    ticket: Ticket | None = None
    ttft_ms: float | None = None  # time to the first output
    ended: bool = False
    _ran: bool = False
    _refused: bool = False

    @property
    def request_id(self) -> str:
        return self.ids.server

    @property
    def rate_headers(self) -> dict[str, str]:
        return self.ticket.rate_headers if self.ticket else {}

    @property
    def model_label(self) -> str:
        """The model as the ledger and the metrics name it: a name the request's catalog serves,
        never a client's invention."""
        return self.model if self.models.serves(self.model) else UNKNOWN_MODEL

    # -- what a kind of request says of its own ---------------------------------------------------

    async def prepare(self) -> None:
        """Before admission (e.g. count the prompt)."""

    async def release(self) -> None:
        """Let go of the upstream before the row is written (idempotent)."""

    def usage(self) -> Usage:
        """What the upstream made; asked once, when the row is written."""
        return Usage()

    # -- the lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self: C) -> C:
        await self.prepare()
        self.meter._enter(self)
        try:
            await self._admit()
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, None)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.end(exc)
        finally:
            self.meter._leave(self)

    async def _admit(self) -> None:
        try:
            self.ticket = await self.meter.admission.admit(
                self.key, self.models, self.model, self.prompt_tokens, self.max_tokens, one_context=self.one_context
            )
        except RuntimeClientError as exc:  # the runtime's model list could not be read
            self._refused = True
            raise runtime_error(exc) from None
        except ApiError:
            self._refused = True
            raise
        if self.ticket.max_tokens < self.max_tokens:
            log.info("request %s capped at %d tokens by its key's quota", self.request_id, self.ticket.max_tokens)

    def produced(self) -> None:
        """Output arrived (text, audio, a transcript): the request is billable; the first is its TTFT."""
        self._ran = True
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000

    def answered(self) -> None:
        """The upstream answered in one piece with nothing streamed (vectors, token ids): billable."""
        self._ran = True

    async def finish(self) -> None:
        """The normal end: write the row now (before the answer's last bytes go out)."""
        await self.end(None)

    async def end(self, exc: BaseException | None) -> None:
        """Write this request's row (once), with the status ``exc`` means; shielded from cancellation.
        The row's own failure is raised only for a request that ended well."""
        if self.ended:
            return
        self.ended = True
        cancelled = False
        try:
            await self.release()  # e.g. abort on the runtime, whatever ended the request
        except asyncio.CancelledError:
            cancelled = True  # the row first; the cancellation goes on after it
        error = await self._write(*outcome(exc))
        if cancelled:
            raise asyncio.CancelledError
        if error is not None and exc is None:
            raise error

    def billed(self, status: int, disconnected: bool) -> bool:
        """Whether the request is charged: it was admitted and its upstream made something, and the
        client received it (streamed, a success, or a client that left)."""
        if self._refused or not self._ran:
            return False
        return self.streamed or status < 400 or disconnected

    async def _write(self, status: int, disconnected: bool) -> ApiError | None:
        """The row, the metrics and the access line; the error to answer with if the row failed."""
        usage, billed = self.usage(), self.billed(status, disconnected)
        prompt, completion = (self.prompt_tokens, usage.completion_tokens) if billed else (0, 0)
        latency_ms = (time.perf_counter() - self.started) * 1000
        event = UsageEvent(
            request_id=self.ids.server,
            client_request_id=self.ids.client,
            api_key_id=self.key.id,
            model=self.model_label,
            endpoint=self.endpoint,
            prompt_tokens=prompt,
            completion_tokens=completion,
            status=status,
            runtime_prompt_tokens=usage.runtime_prompt_tokens,
            runtime_completion_tokens=usage.runtime_completion_tokens,
            latency_ms=round(latency_ms, 3),
            ttft_ms=round(self.ttft_ms, 3) if self.ttft_ms is not None else None,
            streamed=self.streamed,
            client_disconnected=disconnected,
            audio_seconds=usage.audio_seconds if billed else None,
        )
        accesslog.log_request(
            request_id=self.ids.server,
            method="POST",
            path=self.endpoint,
            status=status,
            latency_ms=latency_ms,
            key_id=self.key.id,
            model=self.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            ttft_ms=self.ttft_ms,
            client_request_id=self.ids.client,
        )
        metrics = self.meter.metrics
        metrics.observe(event.endpoint, event.model, status, latency_ms, self.ttft_ms)
        metrics.tokens(event.model, prompt, completion)
        reservation = self.ticket.reservation if self.ticket else None
        return await write_usage(self.meter.db, metrics, event, reservation)
