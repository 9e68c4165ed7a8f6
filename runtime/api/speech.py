"""The runtime client's speech calls (issue 23): ``speak`` streams audio, ``transcribe`` answers once.

Both go through a :class:`runtime.api.client.RuntimeClient` (one DEALER socket, replies routed by id)::

    async with speak(client, "piper", "Hello there.", voice="joe") as stream:
        async for chunk in stream:          # AudioChunk: one sentence's PCM as soon as it is made
            ...
    stream.done["audio_seconds"]

    transcript = await transcribe(client, "whisper", open("a.mp3", "rb").read(), word_timestamps=True)

Leaving the stream early (or cancelling the task that reads it, or the one awaiting ``transcribe``)
aborts the work on the daemon, as for a generation.
"""

from __future__ import annotations

import time
from dataclasses import replace
from types import TracebackType
from typing import Any

from runtime.api.audio import AudioChunk, SpeakSpec, TranscribeSpec, chunk_from_body, speak_to_wire, transcribe_to_wire
from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeRequestError
from runtime.api.inbox import Inbox, as_error
from runtime.api.protocol import Reply, Request


def speak(
    client: RuntimeClient,
    model: str,
    text: str,
    *,
    voice: str | None = None,
    speed: float = 1.0,
    timeout: float = 300.0,
) -> SpeechStream:
    """Start synthesising ``text``: the stream yields one :class:`AudioChunk` per sentence."""
    body = speak_to_wire(SpeakSpec(model, text, voice, speed))
    return SpeechStream(client, Request(client.new_id(), "speak", time.time() + timeout, body))


async def transcribe(
    client: RuntimeClient, model: str, audio: bytes, *, timeout: float = 300.0, **options: Any
) -> dict[str, Any]:
    """The transcript of ``audio`` (a whole file in any common format): text, language, duration,
    segments. ``options``: ``language``, ``prompt``, ``temperature``, ``word_timestamps``, ``task``."""
    spec = replace(TranscribeSpec(model, audio), **options)
    req = Request(client.new_id(), "transcribe", time.time() + timeout, transcribe_to_wire(spec), audio)
    inbox = await client.open(req)
    finished = False
    try:
        reply = await inbox.get()
        finished = True
    finally:
        client.release(req.id)
        if not finished:
            await client.abort(req.id)  # cancelled or timed out: the daemon stops the work
    if reply.type == "result":
        return reply.body
    raise as_error(reply)


class SpeechStream:
    """One streamed synthesis: ``async for chunk in stream``, then ``stream.done`` (the ``done`` body)."""

    def __init__(self, client: RuntimeClient, req: Request) -> None:
        self._client, self._req = client, req
        self._inbox: Inbox | None = None
        self._finished = False
        self._peeked: list[Reply] = []
        self.position: int | None = None
        self.done: dict[str, Any] | None = None
        self.error: RuntimeRequestError | None = None

    @property
    def id(self) -> str:
        return self._req.id

    async def __aenter__(self) -> SpeechStream:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._inbox is not None:
            return
        try:
            self._inbox = await self._client.open(self._req)
        except BaseException:
            self._finished = True
            raise

    async def admitted(self) -> int:
        """Wait until the daemon has queued the request (its queue position); raises its refusal
        (unknown voice, busy, unknown model...) before any audio is read."""
        await self.start()
        while self.position is None:
            reply = await self._next_reply()
            if reply.type == "accepted":
                self.position = int(reply.body.get("position", 0))
            elif reply.type == "error":
                self._finish()
                self.error = as_error(reply)
                raise self.error
            else:
                self._peeked.append(reply)
                break
        return self.position or 0

    async def _next_reply(self) -> Reply:
        if self._peeked:
            return self._peeked.pop(0)
        assert self._inbox is not None
        try:
            return await self._inbox.get()
        except BaseException:
            await self.aclose()
            raise

    def __aiter__(self) -> SpeechStream:
        return self

    async def __anext__(self) -> AudioChunk:
        await self.start()
        while not self._finished or self._peeked:
            reply = await self._next_reply()
            if reply.type == "audio":
                return chunk_from_body(reply.body)
            if reply.type == "accepted":
                self.position = int(reply.body.get("position", 0))
                continue
            self._finish()
            if reply.type == "done":
                self.done = reply.body
                break
            self.error = as_error(reply)
            raise self.error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._inbox is not None and not self._finished:
            self._finish()
            await self._client.abort(self._req.id)

    def _finish(self) -> None:
        self._finished = True
        self._client.release(self._req.id)
