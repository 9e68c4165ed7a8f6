"""One generation request from admission to its ledger row: one owner, one exit.

:meth:`Generations.run` is an async context manager around everything a text request does::

    async with generations.run(key, req, endpoint, ids) as gen:   # admission (refusals raise)
        await gen.open()                                          # queued on the runtime
        async for piece in gen.pieces(client_gone):               # the runtime's text, metered
            ...
        await gen.finish()                                        # (streamed: before the usage chunk)

An embeddings request (``req.inputs``) calls ``await gen.embed()`` instead of ``open`` and ``pieces``;
a tokenizer request ``await gen.tokenize(...)`` or ``await gen.detokenize(...)``.

Its exit is the only place a usage row is written. Whatever ends the request passes there: a
normal end, a refusal, a runtime error, a client gone, an unexpected exception in the caller (a
bug in a chunk writer) and cancellation at shutdown. The write is shielded from cancellation, and
if it fails the reservation is released, the failure counted and logged, and the client told.

Billing, in :meth:`Generation._bill`: a request the server refused or could not run (nothing
generated, no ``done``) costs nothing; otherwise the prompt plus the text the model produced,
capped by the reservation so ``usage`` reported == usage billed. What is billed is what was
delivered: a buffered answer that ends in an error (the request's deadline, 504; the runtime gone,
502) delivered nothing and costs nothing (issue 25), while the row's runtime counts keep what the
model generated. A client that leaves is billed for what was generated, streamed or not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from types import TracebackType

from proxy import accesslog
from proxy.errors import ApiError
from proxy.metering.admission import Admission, Ticket
from proxy.metering.request import GenerationRequest
from proxy.metering.settle import outcome, settle_usage, unless_gone, write_once
from proxy.metering.tokens import count_request, count_text
from proxy.metrics import Metrics
from proxy.storage.api_keys import ApiKey
from proxy.storage.database import Database
from proxy.storage.usage import UsageEvent
from proxy.upstream import Runtime, RuntimeStream, runtime_error
from runtime.api.errors import RuntimeClientError, RuntimeRequestError
from runtime.api.protocol import ERR_UNKNOWN_MODEL, Done, Perf

log = logging.getLogger(__name__)

UNKNOWN_MODEL = "(unknown)"  # the ledger's and the metrics' name for a model the runtime does not serve


@dataclass(frozen=True)
class RequestIds:
    """The server's own request id (the ledger's identity) and the client's, kept beside it."""

    server: str
    client: str | None = None


@dataclass
class Generations:
    """What every generation needs; :meth:`run` makes one."""

    db: Database
    runtime: Runtime
    admission: Admission
    metrics: Metrics
    request_timeout: float
    _live: set[Generation] = field(default_factory=set)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    async def drain(self, timeout: float) -> int:
        """At shutdown, before the database closes: wait until every live generation has written its
        row (a handler cancelled by the server's shutdown writes it as it unwinds); how many did not."""
        if self._live:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                log.error("%d request(s) still running at shutdown after %.0f s", len(self._live), timeout)
        return len(self._live)

    def run(self, key: ApiKey, req: GenerationRequest, endpoint: str, ids: RequestIds) -> GenerationRun:
        """``async with generations.run(...) as gen``: admitted on entry (refusals raise), its row
        written on exit, whatever ends it."""
        return GenerationRun(self, key, req, endpoint, ids)


class GenerationRun:
    """The context manager :meth:`Generations.run` returns (a class, not ``asynccontextmanager``:
    no async generator to start and finalise for every request)."""

    __slots__ = ("_args", "_gen", "_service")

    def __init__(self, service: Generations, key: ApiKey, req: GenerationRequest, endpoint: str, ids: RequestIds):
        self._service, self._args = service, (key, req, endpoint, ids)
        self._gen: Generation | None = None

    async def __aenter__(self) -> Generation:
        service, (key, req, endpoint, ids) = self._service, self._args
        gen = self._gen = Generation(service, key, req, endpoint, ids, prompt_tokens=await count_request(req))
        service.metrics.inflight.inc()
        service._live.add(gen)
        try:
            await gen.admit()
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, None)
            raise
        return gen

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        gen, service = self._gen, self._service
        assert gen is not None
        try:
            await gen.end(exc)
        finally:
            service.metrics.inflight.dec()
            service._live.discard(gen)
            if not service._live:
                service._idle.set()


@dataclass(eq=False)
class Generation:
    """One request. ``end`` writes its row exactly once, whoever calls it first."""

    service: Generations
    key: ApiKey
    req: GenerationRequest
    endpoint: str
    ids: RequestIds
    prompt_tokens: int
    started: float = field(default_factory=time.perf_counter)
    ticket: Ticket | None = None
    pieces_sent: list[str] = field(default_factory=list)
    done: Done | None = None
    finish_reason: str = "stop"
    ttft_ms: float | None = None
    _stream: RuntimeStream | None = None
    _budget_used: int = 0
    _refused: bool = False
    _recorded: bool = False
    _completion: int | None = None
    _runtime_counts: tuple[int | None, int | None] = (None, None)  # from an error frame, when no ``done``

    @property
    def request_id(self) -> str:
        return self.ids.server

    @property
    def rate_headers(self) -> dict[str, str]:
        return self.ticket.rate_headers if self.ticket else {}

    @property
    def text(self) -> str:
        return "".join(self.pieces_sent)

    @property
    def model_label(self) -> str:
        """The model as the ledger and the metrics name it: a name the runtime serves, never a
        client's invention (issue 14: 900 KB names each became a ledger value and a label)."""
        known = self.service.admission.catalog.serves(self.req.model)
        return self.req.model if known else UNKNOWN_MODEL

    @property
    def tool_calls(self) -> tuple[dict[str, str], ...]:
        """The model's tool calls (``{"name", "arguments"}``), known at the end."""
        return self.done.tool_calls if self.done else ()

    @property
    def completion_tokens(self) -> int:
        """The text and the tool calls the model wrote, in the billing unit."""
        if self._completion is not None:
            return self._completion
        n = count_text(self.text) + sum(count_text(c["name"]) + count_text(c["arguments"]) for c in self.tool_calls)
        n = min(n, self.ticket.max_tokens) if self.ticket and self.ticket.reservation else n
        if self._recorded:  # the text is final once the row is being written: count it once
            self._completion = n
        return n

    async def admit(self) -> None:
        try:
            self.ticket = await self.service.admission.admit(
                self.key, self.req.model, self.prompt_tokens, self.req.max_tokens, one_context=self.req.inputs is None
            )
        except RuntimeClientError as exc:
            self._refused = True
            raise runtime_error(exc) from None
        except ApiError:
            self._refused = True
            raise
        if self.ticket.max_tokens < self.req.max_tokens:
            log.info("request %s capped at %d tokens by its key's quota", self.request_id, self.ticket.max_tokens)

    async def open(self) -> None:
        """Send the request to the runtime and wait until it is queued there (refusals raise)."""
        assert self.ticket is not None
        self._stream = self._open()
        try:
            await self._stream.admitted()
        except RuntimeClientError as exc:
            await self._stream.aclose()
            raise await self._runtime_error(exc) from None
        self.service.metrics.queue_position.observe(self._stream.position or 0)

    async def embed(self) -> list[list[float]]:
        """An embeddings request: the vectors; the runtime's own token count goes in ``done``."""
        assert self.ticket is not None and self.req.inputs is not None
        try:
            result = await self.service.runtime.embed(
                self.req.model, list(self.req.inputs), timeout=self.service.request_timeout
            )
        except RuntimeClientError as exc:
            raise await self._runtime_error(exc) from None
        self.done = Done("stop", int(result.get("prompt_tokens", 0)), 0, Perf(0.0, 0.0, 0.0))
        return [list(v) for v in result["embeddings"]]

    async def _runtime_error(self, exc: RuntimeClientError) -> ApiError:
        """A refusal before any text: a model the runtime lost since admission (it restarted) is
        the model's business (503 while it comes back), the rest the runtime's."""
        if isinstance(exc, RuntimeRequestError) and exc.code == ERR_UNKNOWN_MODEL:
            return await self.service.admission.unserved(self.req.model)
        return runtime_error(exc, deadline=True)

    async def tokenize(self, add_special: bool) -> list[int]:
        """A tokenize request (its text is ``req.inputs[0]``): the model's token ids."""
        assert self.ticket is not None and self.req.inputs is not None
        try:
            tokens = await self.service.runtime.tokenize(self.req.model, self.req.inputs[0], add_special)
        except RuntimeClientError as exc:
            raise runtime_error(exc) from None
        self.done = Done("stop", len(tokens), 0, Perf(0.0, 0.0, 0.0))
        return tokens

    async def detokenize(self, tokens: list[int]) -> str:
        """A detokenize request: the text, billed as its completion (within the reservation)."""
        assert self.ticket is not None
        try:
            text = await self.service.runtime.detokenize(self.req.model, tokens)
        except RuntimeClientError as exc:
            raise runtime_error(exc) from None
        self.pieces_sent.append(text)
        self.done = Done("stop", 0, len(tokens), Perf(0.0, 0.0, 0.0))
        return text

    async def pieces(self, client_gone: Callable[[], bool] | None = None) -> AsyncGenerator[str, None]:
        """The runtime's text, metered; stops early at the request's token budget.

        Before its first text a request may wait long with nothing to write (queued, then prefill),
        so a client that left would go unnoticed and keep the model's queue slot: until then
        ``client_gone`` is asked every ``settle.DISCONNECT_POLL`` seconds, and when it says so the stream is
        aborted and :class:`ClientGone` raised. Runtime errors become ApiErrors here.
        """
        stream, ticket = self._stream, self.ticket
        assert stream is not None and ticket is not None, "open() first"
        watch = client_gone
        try:
            while True:
                try:
                    piece = await (unless_gone(stream.__anext__(), watch) if watch is not None else stream.__anext__())
                except StopAsyncIteration:
                    break
                except RuntimeClientError as exc:
                    self._runtime_counts = _counts(exc)
                    raise runtime_error(exc, started=bool(self.pieces_sent), deadline=True) from None
                watch = None
                if self.ttft_ms is None:
                    self.ttft_ms = (time.perf_counter() - self.started) * 1000
                self.pieces_sent.append(piece)
                yield piece
                if ticket.reservation is not None:
                    self._budget_used += count_text(piece)
                    if self._budget_used >= ticket.max_tokens:
                        self.finish_reason = "length"
                        return
            if stream.done is not None:
                self.done = stream.done
                self.finish_reason = stream.done.finish_reason
        finally:
            await stream.aclose()

    def _open(self) -> RuntimeStream:
        assert self.ticket is not None
        req = self.req
        return self.service.runtime.generate(
            req.model,
            messages=list(req.messages) if req.messages is not None else None,
            prompt=req.prompt,
            params=req.sampling(self.ticket.max_tokens),
            output=req.output,
            timeout=self.service.request_timeout,
        )

    async def finish(self) -> None:
        """The normal end: write the row now (a streamed answer sends its usage chunk after this)."""
        await self.end(None)

    async def end(self, exc: BaseException | None) -> None:
        """Write this request's row (once), with the status ``exc`` means; shielded from cancellation."""
        if self._recorded:
            return
        self._recorded = True
        cancelled = False
        if self._stream is not None:
            try:
                await self._stream.aclose()  # abort on the runtime whatever ended the request (idempotent)
            except asyncio.CancelledError:
                cancelled = True  # the row first; the cancellation goes on after it
        status, disconnected = outcome(exc)
        await write_once(self._record(status, disconnected), exc)
        if cancelled:
            raise asyncio.CancelledError

    def _bill(self, status: int, disconnected: bool) -> tuple[int, int]:
        """(prompt, completion) tokens charged: nothing for a request that was refused or never ran,
        nor for a buffered answer that failed (the client received none of it)."""
        if self._refused or (not self.pieces_sent and self.done is None):
            return 0, 0
        if not self.req.stream and status >= 400 and not disconnected:
            return 0, 0
        return self.prompt_tokens, self.completion_tokens

    def _generated(self) -> tuple[int | None, int | None]:
        """The runtime's own (prompt, completion) counts: from ``done``, or from the error that ended it."""
        return (self.done.prompt_tokens, self.done.completion_tokens) if self.done else self._runtime_counts

    async def _record(self, status: int, disconnected: bool) -> ApiError | None:
        prompt, completion = self._bill(status, disconnected)
        runtime_prompt, runtime_completion = self._generated()
        latency_ms = (time.perf_counter() - self.started) * 1000
        model = self.model_label
        event = UsageEvent(
            request_id=self.ids.server,
            client_request_id=self.ids.client,
            api_key_id=self.key.id,
            model=model,
            endpoint=self.endpoint,
            prompt_tokens=prompt,
            completion_tokens=completion,
            status=status,
            runtime_prompt_tokens=runtime_prompt,
            runtime_completion_tokens=runtime_completion,
            latency_ms=round(latency_ms, 3),
            ttft_ms=round(self.ttft_ms, 3) if self.ttft_ms is not None else None,
            streamed=self.req.stream,
            client_disconnected=disconnected,
        )
        accesslog.log_request(
            request_id=self.ids.server,
            method="POST",
            path=self.endpoint,
            status=status,
            latency_ms=latency_ms,
            key_id=self.key.id,
            model=self.req.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            ttft_ms=self.ttft_ms,
            client_request_id=self.ids.client,
        )
        reservation = self.ticket.reservation if self.ticket else None
        return await settle_usage(self.service.db, self.service.metrics, event, reservation, latency_ms, self.ttft_ms)


def _counts(exc: RuntimeClientError) -> tuple[int | None, int | None]:
    """The token counts an error frame carries (a generation cut by its deadline says what it had made)."""
    extra = exc.extra if isinstance(exc, RuntimeRequestError) else {}
    prompt, completion = extra.get("prompt_tokens"), extra.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else None, completion if isinstance(completion, int) else None)
