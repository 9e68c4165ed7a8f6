"""A scripted runtime for in-process proxy tests: the :class:`proxy.upstream.Runtime` interface in a
few dozen lines, like httpx's mock transport.

Each model has a :class:`Script`: the pieces of text it produces, an error it refuses with before
queueing (``refuse``), an error it fails with after some pieces (``fail_after``/``failure``), a
delay between pieces, or ``hang`` (never ends until aborted). Every stream is kept in ``streams``
so a test can see whether the proxy aborted it.

Like the daemon, it answers ``hello`` (a boot id, its models) and ``load``/``unload``, so the proxy's
model lifecycle (the reconciler) runs against it as against the real one: a model loaded gets the
default script, an unloaded one is gone, ``restart()`` forgets everything under a new boot id.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from runtime.api.errors import RuntimeClientError, RuntimeRequestError, RuntimeUnavailableError
from runtime.api.models import ModelConfig
from runtime.api.output import OutputSpec
from runtime.api.protocol import ERR_UNKNOWN_MODEL, PROTOCOL_VERSION, Done, Perf, SamplingParams
from runtime.api.state import READY, Hello, ModelState


@dataclass
class Script:
    pieces: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    refuse: RuntimeClientError | None = None
    fail_after: int | None = None
    failure: RuntimeClientError | None = None
    delay: float = 0.0
    hang: bool = False


class FakeStream:
    def __init__(self, script: Script, params: SamplingParams) -> None:
        self._script, self.params = script, params
        self.position: int | None = None
        self.done: Done | None = None
        self.aborted = False
        self.sent = 0

    async def admitted(self) -> int:
        if self._script.refuse is not None:
            raise self._script.refuse
        self.position = 0
        return 0

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> str:
        script = self._script
        if self.aborted:
            raise StopAsyncIteration
        if script.fail_after is not None and self.sent >= script.fail_after and script.failure is not None:
            raise script.failure
        if self.sent < min(len(script.pieces), self.params.max_tokens):
            await asyncio.sleep(script.delay)
            self.sent += 1
            return script.pieces[self.sent - 1]
        if script.hang:
            await asyncio.Event().wait()
        self.done = Done("stop", 5, self.sent, Perf(0.0, 1.0, 100.0))
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self.done is None:
            self.aborted = True


@dataclass
class FakeRuntime:
    scripts: dict[str, Script] = field(default_factory=lambda: {"fake": Script()})
    down: bool = False
    streams: list[FakeStream] = field(default_factory=list)
    loads: list[ModelConfig] = field(default_factory=list)  # every load asked for, in order
    boot_id: str = field(default_factory=lambda: os.urandom(8).hex())
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def hello(self) -> Hello:
        self._check()
        return Hello(PROTOCOL_VERSION, "fake", self.boot_id, os.getpid(), 0, tuple(await self.models()))

    async def models(self) -> list[ModelState]:
        self._check()
        return [ModelState(name, "fake", READY, path=f"/fake/{name}") for name in self.scripts]

    async def load(self, config: ModelConfig, timeout: float = 300.0) -> ModelState:
        self._check()
        self.loads.append(config)
        self.scripts.setdefault(config.name, Script())
        return ModelState(config.name, config.backend, READY, path=config.path, params=dict(config.params))

    async def unload(self, name: str) -> None:
        self._check()
        if self.scripts.pop(name, None) is None:
            raise RuntimeRequestError(ERR_UNKNOWN_MODEL, f"model {name!r} is not loaded")

    def restart(self) -> None:
        """The daemon restarted: no model loaded, a new boot id."""
        self.scripts.clear()
        self.boot_id = os.urandom(8).hex()

    async def ping(self, timeout: float = 1.0) -> dict[str, Any]:
        self._check()
        return {"pong": next(self._ids)}

    def generate(
        self,
        model: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: str | None = None,
        params: SamplingParams | None = None,
        output: OutputSpec | None = None,
        timeout: float = 300.0,
    ) -> FakeStream:
        if self.down:
            script = Script(refuse=RuntimeUnavailableError("the fake runtime is down"))
        else:  # as the daemon: a model it does not hold is refused before queueing
            unknown = RuntimeRequestError(ERR_UNKNOWN_MODEL, f"model {model!r} is not loaded")
            script = self.scripts.get(model) or Script(refuse=unknown)
        stream = FakeStream(script, params or SamplingParams())
        self.streams.append(stream)
        return stream

    async def embed(self, model: str, inputs: list[str], timeout: float = 300.0) -> dict[str, Any]:
        self._check()
        vectors = [[float(len(text)), 1.0] for text in inputs]
        return {"embeddings": vectors, "prompt_tokens": sum(len(text.split()) for text in inputs)}

    async def tokenize(self, model: str, content: str, add_special: bool = True) -> list[int]:
        self._check()
        return [ord(c) for c in content]

    async def detokenize(self, model: str, tokens: list[int]) -> str:
        self._check()
        return "".join(chr(t) for t in tokens)

    def _check(self) -> None:
        if self.down:
            raise RuntimeUnavailableError("the fake runtime is down")
