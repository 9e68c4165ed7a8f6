"""Try a model: one short generation through the real runtime, timed (issue 19's "Test" button,
like new-api's channel test).

A trial is an admin action, not a client's request: it is audited by the caller and bills no API
key (no usage row; the runtime's own counters see it like any generation). It is bounded so the
button cannot be used to flood the runtime: at most ``MAX_TOKENS`` tokens, greedy, a deadline of
``TIMEOUT`` seconds, and one trial at a time per model (a second while one runs is refused with
:class:`~proxy.lifecycle.errors.ModelStateError`, which the console and the API show as a conflict).
A model unloaded for its keep-alive is loaded first (``ensure``), as a client's request would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from proxy.lifecycle.errors import LifecycleError, ModelStateError
from proxy.lifecycle.status import unfit
from proxy.storage.models import ModelRecord
from runtime.api.errors import RuntimeClientError, RuntimeRequestError
from runtime.api.protocol import Done, SamplingParams
from runtime.api.state import ModelState

log = logging.getLogger(__name__)

PROMPT = "Say hello in one short sentence."
MAX_TOKENS = 8
TIMEOUT = 60.0  # seconds, the queue wait included


class TrialStream(Protocol):
    done: Done | None

    async def admitted(self) -> int: ...

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


class Generator(Protocol):
    """What a trial needs of the runtime client (``RuntimeClient.generate``, or the proxy's pool)."""

    def generate(
        self,
        model: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        params: SamplingParams | None = None,
        timeout: float = 300.0,
    ) -> Any: ...


class ModelRuntime(Generator, Protocol):
    """The runtime as the console sees it: its models (with state and memory) and a generation."""

    async def models(self) -> list[ModelState]: ...


class TrialError(LifecycleError):
    """The runtime refused or failed the trial; the message is the runtime's."""


@dataclass(frozen=True)
class TrialResult:
    """One trial: its latency (the whole request), time to first text, the text and its tokens."""

    model: str
    latency_ms: float
    first_text_ms: float | None
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    tokens_per_second: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Trials:
    """The trials running in this process, one per model at most."""

    def __init__(self) -> None:
        self._running: set[str] = set()

    def running(self, name: str) -> bool:
        return name in self._running

    async def run(
        self, runtime: Generator, record: ModelRecord, ensure: Callable[[str], Awaitable[bool]] | None = None
    ) -> TrialResult:
        why = unfit(record, "test")
        if why is not None:
            raise ModelStateError(why)
        if record.name in self._running:
            raise ModelStateError(f"a test of {record.name!r} is already running: wait for its answer")
        self._running.add(record.name)
        try:
            if ensure is not None:
                await ensure(record.name)
            return await _generate(runtime, record.name)
        finally:
            self._running.discard(record.name)


async def _generate(runtime: Generator, name: str) -> TrialResult:
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)
    messages = [{"role": "user", "content": PROMPT}]
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    stream: TrialStream = runtime.generate(name, messages=messages, params=params, timeout=TIMEOUT)
    try:
        await stream.admitted()
        async for text in stream:
            if first is None and text:
                first = time.perf_counter()
            parts.append(text)
    except RuntimeRequestError as exc:
        raise TrialError(f"model {name!r} did not answer: {exc.message}") from None
    except RuntimeClientError as exc:
        raise TrialError(f"the runtime did not answer the test of {name!r}: {exc}") from None
    finally:
        await stream.aclose()
    return _result(name, stream.done, "".join(parts), start, first)


def _result(name: str, done: Done | None, text: str, start: float, first: float | None) -> TrialResult:
    latency = (time.perf_counter() - start) * 1000
    if done is None:
        raise TrialError(f"the runtime ended the test of {name!r} without a result")
    result = TrialResult(
        model=name,
        latency_ms=round(latency, 1),
        first_text_ms=None if first is None else round((first - start) * 1000, 1),
        text=text,
        prompt_tokens=done.prompt_tokens,
        completion_tokens=done.completion_tokens,
        finish_reason=done.finish_reason,
        tokens_per_second=round(done.perf.decode_tps, 1) if done.perf.decode_tps else None,
    )
    log.info("model %s tested: %.0f ms, %d tokens", name, result.latency_ms, result.completion_tokens)
    return result
