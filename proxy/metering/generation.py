"""A request to the runtime (a generation, an embedding, the tokenizer's), metered by the one owner.

:meth:`Generations.run` makes a :class:`Generation`, a :class:`~proxy.metering.meter.MeteredCall`
whose upstream is the runtime::

    async with generations.run(key, req, endpoint, ids) as gen:   # admission (refusals raise)
        await gen.open()                                          # queued on the runtime
        async for piece in gen.pieces(client_gone):               # the runtime's text, metered
            ...
        await gen.finish()                                        # (streamed: before the usage chunk)

An embeddings request (``req.inputs``) calls ``await gen.embed()`` instead of ``open`` and ``pieces``;
a tokenizer request ``await gen.tokenize(...)`` or ``await gen.detokenize(...)``.

What is the runtime's own: the prompt counted before admission (:meth:`Generation.prepare`), the
stream aborted before the row is written (:meth:`Generation.release`), the text the model made
counted for the row, capped by the reservation so ``usage`` reported == usage billed
(:meth:`Generation.usage`), and the runtime's exact counts beside it (from ``done``, or from the
error frame that cut a generation). Admission, the row, the metrics, the access line and the shutdown
drain are the owner's (:mod:`proxy.metering.meter`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from proxy.errors import ApiError
from proxy.metering.admission import RuntimeModels
from proxy.metering.meter import Meter, MeteredCall, Usage
from proxy.metering.request import GenerationRequest
from proxy.metering.settle import unless_gone
from proxy.metering.tokens import count_request, count_text
from proxy.request_ids import RequestIds
from proxy.storage.api_keys import ApiKey
from proxy.upstream import Runtime, RuntimeStream, runtime_error
from runtime.api.errors import RuntimeClientError, RuntimeRequestError
from runtime.api.protocol import ERR_UNKNOWN_MODEL, Done, Perf

log = logging.getLogger(__name__)


@dataclass
class Generations:
    """What every request to the runtime needs; :meth:`run` makes one."""

    meter: Meter
    runtime: Runtime
    models: RuntimeModels
    request_timeout: float

    def run(self, key: ApiKey, req: GenerationRequest, endpoint: str, ids: RequestIds) -> Generation:
        """``async with generations.run(...) as gen``: admitted on entry (refusals raise), its row
        written on exit, whatever ends it."""
        return Generation(
            meter=self.meter,
            key=key,
            endpoint=endpoint,
            ids=ids,
            model=req.model,
            models=self.models,
            max_tokens=req.max_tokens,
            one_context=req.inputs is None,
            streamed=req.stream,
            service=self,
            req=req,
        )


@dataclass(eq=False, kw_only=True)
class Generation(MeteredCall):
    """One request to the runtime."""

    service: Generations
    req: GenerationRequest
    pieces_sent: list[str] = field(default_factory=list)
    done: Done | None = None
    finish_reason: str = "stop"
    _stream: RuntimeStream | None = None
    _budget_used: int = 0
    _completion: int | None = None
    _runtime_counts: tuple[int | None, int | None] = (None, None)  # from an error frame, when no ``done``

    @property
    def text(self) -> str:
        return "".join(self.pieces_sent)

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
        if self.ended:  # the text is final once the row is being written: count it once
            self._completion = n
        return n

    async def prepare(self) -> None:
        self.prompt_tokens = await count_request(self.req)

    async def release(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()  # abort on the runtime (idempotent)

    def usage(self) -> Usage:
        """The text the model made (billed), and the runtime's own counts: from ``done``, or from
        the error that ended it."""
        runtime = (self.done.prompt_tokens, self.done.completion_tokens) if self.done else self._runtime_counts
        return Usage(self.completion_tokens, *runtime)

    async def open(self) -> None:
        """Send the request to the runtime and wait until it is queued there (refusals raise)."""
        assert self.ticket is not None
        self._stream = self._open()
        try:
            await self._stream.admitted()
        except RuntimeClientError as exc:
            await self._stream.aclose()
            raise await self._runtime_error(exc) from None
        self.meter.metrics.queue_position.observe(self._stream.position or 0)

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
        self.answered()
        return [list(v) for v in result["embeddings"]]

    async def _runtime_error(self, exc: RuntimeClientError) -> ApiError:
        """A refusal before any text: a model the runtime lost since admission (it restarted) is
        the model's business (503 while it comes back), the rest the runtime's."""
        if isinstance(exc, RuntimeRequestError) and exc.code == ERR_UNKNOWN_MODEL:
            return await self.models.unserved(self.req.model)
        return runtime_error(exc, deadline=True)

    async def tokenize(self, add_special: bool) -> list[int]:
        """A tokenize request (its text is ``req.inputs[0]``): the model's token ids."""
        assert self.ticket is not None and self.req.inputs is not None
        try:
            tokens = await self.service.runtime.tokenize(self.req.model, self.req.inputs[0], add_special)
        except RuntimeClientError as exc:
            raise runtime_error(exc) from None
        self.done = Done("stop", len(tokens), 0, Perf(0.0, 0.0, 0.0))
        self.answered()
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
        self.answered()
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
                self.produced()
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
                self.answered()
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


def _counts(exc: RuntimeClientError) -> tuple[int | None, int | None]:
    """The token counts an error frame carries (a generation cut by its deadline says what it had made)."""
    extra = exc.extra if isinstance(exc, RuntimeRequestError) else {}
    prompt, completion = extra.get("prompt_tokens"), extra.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else None, completion if isinstance(completion, int) else None)
