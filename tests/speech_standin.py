"""A local stand-in for Hugging Face's inference service (``hf-inference`` provider), for the speech tests.

It behaves as the real service does for the two speech tasks (``POST /models/<repo>``): a JSON
``{"inputs": text}`` body gets audio back (a real WAV made with the ``wave`` module), sent in chunks;
a raw audio body gets ``{"text", "chunks"}``. It requires the bearer token it was given, answers
401 like the real service otherwise, and can be told to fail the other real ways: a model loading
(503 + ``estimated_time``), a timeout (no answer), an upstream 4xx with a message. It runs its own
event loop in a thread, so the proxy (a subprocess) and the test (synchronous) can both reach it.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import threading
import wave
from dataclasses import dataclass, field

from aiohttp import web

from tests.harness import free_port

TRANSCRIPT = "Hello from the stand-in, this is a transcript."


def make_wav(seconds: float = 1.0, rate: int = 16000, tone: float = 440.0) -> bytes:
    """A mono 16-bit PCM WAV of a sine tone."""
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * tone * i / rate))) for i in range(int(seconds * rate))
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


@dataclass
class StandIn:
    token: str
    port: int = field(default_factory=free_port)
    mode: str = "ok"  # ok | loading | timeout | bad_request | slow | cut (audio cut off half-way)
    audio: bytes = field(default_factory=lambda: make_wav(2.0))
    chunks: int = 8
    gate_seconds: float = 6.0  # after the first chunk, wait this long for `first_seen` before the rest
    calls: list[dict[str, object]] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)  # the last audio chunk was written
    first_seen: threading.Event = field(default_factory=threading.Event)  # the test got the first bytes
    cancelled: threading.Event = field(default_factory=threading.Event)  # the proxy dropped a call
    received: bytes = b""
    transcript: str = TRANSCRIPT  # the text a recognition answers with
    huge: int = 0  # > 0: the transcript is this many bytes of JSON, streamed (a service gone wrong)
    loading_body: str | None = None  # the raw body of a "loading" answer (e.g. estimated_time 1e400)
    retry_after: str | None = None  # a Retry-After header on a "loading" answer
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandIn:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        assert ready.wait(10), "the stand-in did not start"
        return self

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is not None and runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)

    def reset(self, mode: str = "ok") -> None:
        self.mode = mode
        self.calls.clear()
        self.finished.clear()
        self.first_seen.clear()
        self.cancelled.clear()
        self.received = b""
        self.transcript, self.huge, self.loading_body, self.retry_after = TRANSCRIPT, 0, None, None

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/models/{repo:.+}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        loop.run_until_complete(self._runner.setup())
        loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call: dict[str, object] = {"repo": request.match_info["repo"], "type": request.content_type}
        self.calls.append(call)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Invalid credentials in Authorization header")
        try:
            return await self._answer(request, call)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def _answer(self, request: web.Request, call: dict[str, object]) -> web.StreamResponse:
        if self.mode == "loading":
            if self.loading_body is not None or self.retry_after is not None:
                body = self.loading_body or json.dumps({"error": f"Model {call['repo']} is currently loading"})
                headers = {"Retry-After": self.retry_after} if self.retry_after else {}
                return web.Response(status=503, body=body, content_type="application/json", headers=headers)
            return _error(503, f"Model {call['repo']} is currently loading", estimated_time=12.3)
        if self.mode == "bad_request":
            return _error(400, "Input is too long for this model")
        if self.mode == "timeout":
            await asyncio.sleep(30)
        if request.content_type == "application/json":
            call["inputs"] = (await request.json())["inputs"]
            return await self._speak(request)
        self.received = await request.read()
        if self.mode == "slow":
            await asyncio.sleep(4)
        if self.huge:
            return await self._huge(request)
        if self.transcript != TRANSCRIPT:
            return web.json_response({"text": self.transcript})
        words = TRANSCRIPT.split()
        half = " ".join(words[: len(words) // 2])
        chunks = [{"text": half, "timestamp": [0.0, 0.8]}, {"text": TRANSCRIPT[len(half) :], "timestamp": [0.8, 1.6]}]
        return web.json_response({"text": " " + TRANSCRIPT, "chunks": chunks})

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        """``{"text": "word word ..."}`` of ``self.huge`` bytes, written 1 MB at a time."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"text": "')
        block = b"word " * (1 << 18)  # 1.25 MB
        sent = 0
        while sent < self.huge:
            await response.write(block)
            sent += len(block)
        await response.write(b'"}')
        await response.write_eof()
        return response

    async def _speak(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        size = math.ceil(len(self.audio) / self.chunks)
        for i in range(0, len(self.audio), size):
            await response.write(self.audio[i : i + size])
            if self.mode == "cut" and i >= len(self.audio) // 2 and request.transport is not None:
                request.transport.abort()
                return response
            if i == 0:  # give a streaming proxy the time to pass the first chunk on
                await asyncio.get_running_loop().run_in_executor(None, self.first_seen.wait, self.gate_seconds)
        self.finished.set()
        await response.write_eof()
        return response


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.Response(status=status, body=json.dumps({"error": message, **extra}), content_type="application/json")
