"""One generation request from admission to its ledger row.

``Serving`` holds what every request needs (database, runtime client, limiter,
metrics). ``Serving.admit`` checks the model, the windows and the quota and
returns a ``Generation``; the generation runs the runtime stream, meters it and
writes exactly one usage row, whatever happens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from proxy.apierror import ApiError, bad_request, unavailable
from proxy.catalog import ModelCatalog
from proxy.db import Database
from proxy.keys import ApiKey
from proxy.ledger import UsageEvent, record_usage
from proxy.metrics import Metrics
from proxy.openai_request import GenerationRequest
from proxy.quota import QuotaExceeded, Reservation, release, reserve
from proxy.ratelimit import RateLimiter
from proxy.tokens import count_chat, count_text
from runtime.client import GenerateStream, RuntimeClient
from runtime.errors import ClientError, RuntimeRequestError, RuntimeTimeoutError, RuntimeUnavailableError
from runtime.protocol import Done, SamplingParams

log = logging.getLogger(__name__)

DISCONNECT_POLL = 0.5  # seconds between checks that the client is still there while no text comes

# Runtime error codes -> (HTTP status, OpenAI type, code) before any byte was sent.
_RUNTIME_ERRORS = {
    "busy": (503, "server_error", "model_busy"),
    "unknown_model": (404, "invalid_request_error", "model_not_found"),
    "bad_request": (400, "invalid_request_error", None),
    "deadline_exceeded": (504, "server_error", "timeout"),
    "shutting_down": (503, "server_error", "service_unavailable"),
}


class ClientGone(ConnectionResetError):
    """The client went away while its request waited for the model's first text."""


@dataclass
class Serving:
    db: Database
    runtime: RuntimeClient
    catalog: ModelCatalog
    limiter: RateLimiter
    metrics: Metrics
    request_timeout: float

    async def admit(self, key: ApiKey, req: GenerationRequest, endpoint: str, request_id: str) -> Generation:
        """Model, windows and quota checks; a refusal is an ApiError (and leaves a usage row)."""
        gen = Generation(self, key, req, endpoint, request_id)
        try:
            await self._check_model(key, req.model)
            gen.rate_headers = self._check_windows(key, gen.prompt_tokens + req.max_tokens)
            gen.reservation = await self._reserve(key, gen.prompt_tokens + req.max_tokens)
        except ClientError as exc:
            error = before_headers(exc)
            await gen.record(error.status, refused=True)
            raise error from None
        except ApiError as exc:
            await gen.record(exc.status, refused=True)
            raise
        return gen

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

    async def _reserve(self, key: ApiKey, tokens: int) -> Reservation | None:
        if key.token_limit is None:
            return None
        result = await reserve(self.db, key.id, tokens)
        if isinstance(result, QuotaExceeded):
            raise ApiError(
                429,
                f"You exceeded your current quota: {result.message}",
                type="insufficient_quota",
                code="insufficient_quota",
                headers={"x-should-retry": "false"},
            )
        return result


@dataclass
class Generation:
    """One admitted request. ``record`` is called exactly once, by whoever ends it."""

    serving: Serving
    key: ApiKey
    req: GenerationRequest
    endpoint: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    rate_headers: dict[str, str] = field(default_factory=dict)
    reservation: Reservation | None = None
    pieces: list[str] = field(default_factory=list)
    done: Done | None = None
    finish_reason: str = "stop"
    ttft_ms: float | None = None
    runtime_completion_tokens: int | None = None
    _budget_used: int = 0
    _recorded: bool = False

    def __post_init__(self) -> None:
        req = self.req
        self.prompt_tokens = count_chat(req.messages) if req.messages is not None else count_text(req.prompt or "")

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        n = count_text(self.text)
        # With a quota, the reservation bounds the bill; usage reported == usage billed.
        return min(n, self.req.max_tokens) if self.reservation is not None else n

    async def open_stream(self) -> GenerateStream:
        """Send the request to the runtime and wait until it is queued there."""
        stream = self.serving.runtime.generate(
            self.req.model,
            messages=list(self.req.messages) if self.req.messages is not None else None,
            prompt=self.req.prompt,
            params=self._params(),
            timeout=self.serving.request_timeout,
        )
        try:
            await stream.admitted()
        except ClientError as exc:
            await stream.aclose()
            error = before_headers(exc)
            await self.record(error.status)
            raise error from None
        return stream

    def _params(self) -> SamplingParams:
        r = self.req
        return SamplingParams(
            max_tokens=r.max_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            min_p=r.min_p,
            repeat_penalty=r.repeat_penalty,
            frequency_penalty=r.frequency_penalty,
            presence_penalty=r.presence_penalty,
            stop=r.stop,
            seed=r.seed,
        )

    async def pieces_from(
        self, stream: GenerateStream, client_gone: Callable[[], bool] | None = None
    ) -> AsyncIterator[str]:
        """The runtime's text, metered; stops early at the quota's completion budget.

        Before its first text a request may wait for long with nothing to write (queued behind other
        generations, then the prompt's prefill), so a client that left would go unnoticed and keep the
        model's queue slot: until then ``client_gone`` is asked every ``DISCONNECT_POLL`` seconds, and
        when it says so the stream is aborted and :class:`ClientGone` raised. Once text flows, the
        caller's writes notice a disconnect at the next piece, and nothing is added per piece.
        """
        watch = client_gone
        while True:
            try:
                piece = await (_next_unless_gone(stream, watch) if watch is not None else stream.__anext__())
            except StopAsyncIteration:
                break
            watch = None
            if self.ttft_ms is None:
                self.ttft_ms = (time.perf_counter() - self.started) * 1000
            self.pieces.append(piece)
            yield piece
            if self.reservation is not None:
                self._budget_used += count_text(piece)
                if self._budget_used >= self.req.max_tokens:
                    self.finish_reason = "length"
                    await stream.aclose()
                    return
        if stream.done is not None:
            self.done = stream.done
            self.finish_reason = stream.done.finish_reason
            self.runtime_completion_tokens = stream.done.completion_tokens

    async def record(self, status: int, *, disconnected: bool = False, refused: bool = False) -> None:
        """Write this request's usage row (once), settling its reservation.

        A request refused before it reached the model (``refused``) is recorded but bills nothing.
        """
        if self._recorded:
            return
        self._recorded = True
        prompt = 0 if refused else self.prompt_tokens
        completion = 0 if refused else self.completion_tokens
        latency_ms = (time.perf_counter() - self.started) * 1000
        event = UsageEvent(
            request_id=self.request_id,
            api_key_id=self.key.id,
            model=self.req.model,
            endpoint=self.endpoint,
            prompt_tokens=prompt,
            completion_tokens=completion,
            status=status,
            runtime_prompt_tokens=self.done.prompt_tokens if self.done else None,
            runtime_completion_tokens=self.runtime_completion_tokens,
            latency_ms=round(latency_ms, 3),
            ttft_ms=round(self.ttft_ms, 3) if self.ttft_ms is not None else None,
            streamed=self.req.stream,
            client_disconnected=disconnected,
        )
        metrics = self.serving.metrics
        metrics.observe(self.endpoint, self.req.model, status, latency_ms, self.ttft_ms)
        metrics.tokens(self.req.model, prompt, completion)
        try:
            await record_usage(self.serving.db, event, self.reservation)
        except Exception:
            metrics.ledger_failures.inc()
            log.exception("usage row for request %s could not be written", self.request_id)
            if self.reservation is not None:
                await _release_quietly(self.serving.db, self.reservation)
            raise ApiError(500, "the usage ledger could not be written", type="server_error") from None


def before_headers(exc: ClientError) -> ApiError:
    """A runtime failure before any response byte was sent."""
    if isinstance(exc, RuntimeUnavailableError):
        return unavailable("the model runtime is not reachable; retry shortly")
    if isinstance(exc, RuntimeTimeoutError):
        return unavailable("the model runtime did not answer in time")
    if isinstance(exc, RuntimeRequestError):
        status, kind, code = _RUNTIME_ERRORS.get(exc.code, (502, "server_error", "runtime_error"))
        if status == 400:
            return bad_request(exc.message, code="context_length_exceeded")
        headers = {"retry-after": "1"} if status == 503 else {}
        return ApiError(status, exc.message, type=kind, code=code, headers=headers)
    return ApiError(502, "the model runtime failed", type="server_error", code="runtime_error")


def mid_stream(exc: ClientError) -> ApiError:
    """A runtime failure after the response started: 502, or 504 for a deadline."""
    if isinstance(exc, RuntimeRequestError) and exc.code == "deadline_exceeded":
        return ApiError(504, "the request took longer than the server allows", type="server_error", code="timeout")
    if isinstance(exc, RuntimeUnavailableError):
        return ApiError(
            502, "the model runtime went away during the request", type="server_error", code="runtime_error"
        )
    return ApiError(502, f"the model runtime failed: {exc}", type="server_error", code="runtime_error")


async def _next_unless_gone(stream: GenerateStream, client_gone: Callable[[], bool]) -> str:
    """The stream's next piece; :class:`ClientGone` if ``client_gone()`` turns true first."""
    step = asyncio.create_task(stream.__anext__())
    try:
        while not step.done():
            await asyncio.wait((step,), timeout=DISCONNECT_POLL)
            if not step.done() and client_gone():
                raise ClientGone("the client went away while its request waited for the model")
        return step.result()
    finally:
        if not step.done():
            step.cancel()  # a stream whose reader is cancelled aborts its request on the daemon
            await asyncio.wait((step,))


async def _release_quietly(db: Database, reservation: Reservation) -> None:
    try:
        await release(db, reservation)
    except Exception:
        log.exception("could not release reservation %s", reservation.id)
