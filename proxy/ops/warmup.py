"""Warm-up at start: pay the one-time costs before the proxy says it is ready, not in a user's request.

Measured here (issue 13), the first chat after start took 390-480 ms against 70-80 ms for the next
ones: about 215 ms building tiktoken's cl100k_base encoder (first token count), plus the model's
first decode in the runtime (llama.cpp allocates its compute buffers then) and the first trip over
a fresh ZeroMQ connection. :class:`Warmup` does all of them once, in the background, right after
start-up:

1. builds the encoder (in a thread: it takes a fifth of a second of CPU);
2. waits until the runtime answers and no model is still loading (retrying every half second, so a
   runtime that starts after the proxy is waited for);
3. sends each ready model a one-token generation through the same runtime client the requests use.

Until it is done, ``/readyz`` answers 503 with ``"warmup": "pending"`` and ``llmserver up`` holds
its banner back; systemd's ``READY=1`` waits for it too. A runtime without any model is ready at
once (there is nothing to warm; a warning says so). A model that fails its warm-up does not block
readiness: the failure is logged and the request path reports it as it would anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from proxy.metering.tokens import count_text, encoding
from proxy.upstream import Runtime
from runtime.api.errors import RuntimeClientError
from runtime.api.protocol import SamplingParams
from runtime.api.state import LOADING, READY

log = logging.getLogger(__name__)

RETRY_EVERY = 0.5  # seconds between attempts while the runtime is down or a model still loads
WARMUP_MESSAGES = [{"role": "user", "content": "Hi"}]
WARMUP_TIMEOUT = 120.0  # seconds one warm-up generation may take (a big model on a busy board)


class Warmup:
    """Runs once per process; :attr:`done` is set when the proxy is really ready."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.done = asyncio.Event()
        self.state = "pending: loading the token counter"
        self.warmed: list[str] = []
        self.took_ms: float | None = None

    async def run(self) -> None:
        try:
            await self._run()
        except Exception:
            self.state = "failed (see the log)"
            log.exception("warm-up failed; the proxy will not report ready")
            raise

    async def _run(self) -> None:
        started = time.perf_counter()
        await asyncio.to_thread(_load_encoder)
        models = await self._ready_models()
        for name in models:
            await self._warm(name)
        if not models:
            log.warning("warm-up: the runtime serves no model; ready without a warm-up generation")
        self.took_ms = (time.perf_counter() - started) * 1000
        self.state = "done"
        self.done.set()
        log.info("warm-up done in %.0f ms (models: %s)", self.took_ms, ", ".join(self.warmed) or "none")

    async def _ready_models(self) -> list[str]:
        """The models that are ready once none is loading any more; waits for the runtime."""
        while True:
            try:
                models = await self._runtime.models()
            except RuntimeClientError as exc:
                self.state = "pending: waiting for the runtime"
                log.debug("warm-up: the runtime did not answer (%s); retrying", exc)
                await asyncio.sleep(RETRY_EVERY)
                continue
            if any(m.state == LOADING for m in models):
                self.state = "pending: a model is still loading"
                await asyncio.sleep(RETRY_EVERY)
                continue
            return [m.name for m in models if m.state == READY]

    async def _warm(self, model: str) -> None:
        self.state = f"pending: warming up {model}"
        stream = self._runtime.generate(
            model, messages=WARMUP_MESSAGES, params=SamplingParams(max_tokens=1), timeout=WARMUP_TIMEOUT
        )
        started = time.perf_counter()
        try:
            await stream.admitted()
            async for _ in stream:
                pass
        except RuntimeClientError as exc:
            log.warning("warm-up generation on %s failed: %s", model, exc)
            return
        finally:
            await stream.aclose()
        self.warmed.append(model)
        log.info("warm-up: %s answered in %.0f ms", model, (time.perf_counter() - started) * 1000)


warmup_key = web.AppKey("warmup", Warmup)


def _load_encoder() -> None:
    encoding()
    count_text("warm-up")
