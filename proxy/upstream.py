"""The runtime as the proxy sees it: a small interface, the model catalog, and error translation.

The proxy needs of a runtime: the models it serves, a generation as an async stream of text (leaving
the stream early aborts the generation), a ping, and (issue 12) embeddings and the model's tokenizer.
:class:`Runtime` is that interface; ``runtime.api.client.RuntimeClient`` is the real implementation,
the tests' scripted fake another, and several daemons behind one proxy will be a third.

Runtime errors are translated here, once: :func:`runtime_error` maps each protocol error code
to the OpenAI error a client gets (before any response byte, or after the stream started).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.errors import ApiError
from runtime.api.errors import RuntimeClientError, RuntimeRequestError, RuntimeTimeoutError, RuntimeUnavailableError
from runtime.api.models import ModelConfig
from runtime.api.output import OutputSpec
from runtime.api.protocol import (
    ERR_ABORTED,
    ERR_BAD_REQUEST,
    ERR_BUSY,
    ERR_CONTEXT_LENGTH,
    ERR_DEADLINE,
    ERR_SHUTTING_DOWN,
    ERR_UNKNOWN_MODEL,
    Done,
    SamplingParams,
)
from runtime.api.state import READY, Hello, ModelState


class RuntimeStream(Protocol):
    """One generation on the runtime: wait until queued, then iterate its text; ``done`` at the end."""

    position: int | None
    done: Done | None

    async def admitted(self) -> int: ...

    def __aiter__(self) -> AsyncIterator[str]: ...

    async def __anext__(self) -> str: ...

    async def aclose(self) -> None: ...


class Runtime(Protocol):
    """What the proxy needs of a runtime daemon (or of several). ``hello``, ``load`` and ``unload``
    are for the model lifecycle's reconciler (``proxy.lifecycle.reconciler.RuntimeControl``)."""

    async def hello(self) -> Hello: ...

    async def models(self) -> list[ModelState]: ...

    async def load(self, config: ModelConfig, timeout: float = 300.0) -> ModelState: ...

    async def unload(self, name: str) -> None: ...

    async def ping(self, timeout: float = 1.0) -> dict[str, Any]: ...

    def generate(
        self,
        model: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: str | None = None,
        params: SamplingParams | None = None,
        output: OutputSpec | None = None,
        timeout: float = 300.0,
    ) -> RuntimeStream: ...

    async def embed(self, model: str, inputs: list[str], timeout: float = 300.0) -> dict[str, Any]: ...

    async def tokenize(self, model: str, content: str, add_special: bool = True) -> list[int]: ...

    async def detokenize(self, model: str, tokens: list[int]) -> str: ...


MISS_TTL = 0.05  # seconds a snapshot answers for a model missing from it (one runtime round trip after)


@dataclass(frozen=True)
class ModelInfo:
    id: str
    backend: str
    state: str
    created: int
    context: int | None = None  # the model's context, in its own tokens, when the runtime says


class ModelCatalog:
    """The models the proxy serves (cached for a second): those the runtime has ready, and those the
    model lifecycle unloaded for idleness (``idle``, a provider of their names): they are served on
    demand, the request waiting for the load, so clients still see them listed."""

    def __init__(self, runtime: Runtime, ttl: float = 1.0, idle: Callable[[], Collection[str]] | None = None) -> None:
        self._runtime = runtime
        self._ttl = ttl
        self._idle = idle
        self._models: dict[str, ModelInfo] = {}
        self._fetched = 0.0
        self._created = int(time.time())

    async def models(self, ttl: float | None = None) -> dict[str, ModelInfo]:
        """Ready and idle models by name, fetched again when older than ``ttl`` (default: the
        catalog's). Raises the runtime client's errors when it is unreachable."""
        now = time.monotonic()
        if now - self._fetched > (self._ttl if ttl is None else ttl):
            listed = await self._runtime.models()
            self._models = {
                m.name: ModelInfo(m.name, m.backend, m.state, self._created, m.context)
                for m in listed
                if m.state == READY
            }
            for name in self._idle() if self._idle is not None else ():
                self._models.setdefault(name, ModelInfo(name, "", "idle", self._created))
            self._fetched = now
        return self._models

    def serves(self, name: str) -> bool:
        """Whether ``name`` was among the ready models at the last fetch (no runtime round trip)."""
        return name in self._models

    async def has(self, name: str) -> bool:
        """Whether ``name`` is served. A name missing from the snapshot is looked up again once the
        snapshot is :data:`MISS_TTL` old: a model that has just finished loading is served at once,
        not a second later (until then its requests were refused as unknown, issue 25)."""
        if name in self._models and time.monotonic() - self._fetched <= self._ttl:
            return True
        return name in await self.models(ttl=MISS_TTL if name not in self._models else None)

    def context(self, name: str) -> int | None:
        """The model's context length as of the last fetch (None: unknown, e.g. a model not loaded)."""
        info = self._models.get(name)
        return info.context if info is not None else None


# Protocol error code -> (HTTP status, OpenAI type, OpenAI code, retry-after seconds or None).
_CODES: dict[str, tuple[int, str, str | None, int | None]] = {
    ERR_BUSY: (503, "server_error", "model_busy", 1),
    ERR_SHUTTING_DOWN: (503, "server_error", "service_unavailable", 1),
    ERR_UNKNOWN_MODEL: (404, "invalid_request_error", "model_not_found", None),
    ERR_CONTEXT_LENGTH: (400, "invalid_request_error", "context_length_exceeded", None),
    ERR_BAD_REQUEST: (400, "invalid_request_error", "invalid_request", None),
    ERR_DEADLINE: (504, "server_error", "timeout", None),
    ERR_ABORTED: (503, "server_error", "aborted", 1),
}


def runtime_error(exc: RuntimeClientError, *, started: bool = False, deadline: bool = False) -> ApiError:
    """The OpenAI error for a runtime failure; ``started``: after the model produced text;
    ``deadline``: the call was bounded by the request's own deadline (a generation, an embedding), so
    a timeout means the request ran out of time: 504, not to be retried (retrying would time out again)."""
    if isinstance(exc, RuntimeUnavailableError):
        if started:
            return ApiError(
                502, "the model runtime went away during the request", type="server_error", code="runtime_error"
            )
        return _retry(
            ApiError(
                503,
                "the model runtime is not reachable; retry shortly",
                type="server_error",
                code="service_unavailable",
            )
        )
    if isinstance(exc, RuntimeTimeoutError) and deadline:
        return _deadline_error()
    if isinstance(exc, RuntimeTimeoutError):
        return _retry(
            ApiError(503, "the model runtime did not answer in time", type="server_error", code="service_unavailable")
        )
    if isinstance(exc, RuntimeRequestError) and exc.code in _CODES:
        status, kind, code, retry = _CODES[exc.code]
        if exc.code == ERR_DEADLINE:
            return _deadline_error()
        param = exc.extra.get("param")
        error = ApiError(status, exc.message, type=kind, code=code, param=param if isinstance(param, str) else None)
        return _retry(error, retry) if retry is not None else error
    return ApiError(502, f"the model runtime failed: {exc}", type="server_error", code="runtime_error")


def _deadline_error() -> ApiError:
    status, kind, code, _ = _CODES[ERR_DEADLINE]
    message = "the request took longer than the server allows"
    return ApiError(status, message, type=kind, code=code, headers={"x-should-retry": "false"})


def _retry(error: ApiError, seconds: int = 1) -> ApiError:
    error.headers["retry-after"] = str(seconds)
    return error


def _server_error(status: int, message: str, code: str) -> ApiError:
    return ApiError(status, message, type="server_error", code=code)
