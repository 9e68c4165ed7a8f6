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
from typing import Any

from runtime.api.audio import AudioChunk, SpeakSpec, TranscribeSpec, chunk_from_body, speak_to_wire, transcribe_to_wire
from runtime.api.client import RuntimeClient
from runtime.api.inbox import as_error
from runtime.api.protocol import Request
from runtime.api.stream import ReplyStream


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


class SpeechStream(ReplyStream[AudioChunk]):
    """One streamed synthesis: ``async for chunk in stream``, then ``stream.done`` (the ``done`` body)."""

    PIECE = "audio"

    def __init__(self, client: RuntimeClient, req: Request) -> None:
        super().__init__(client, req)
        self.done: dict[str, Any] | None = None

    def _piece(self, body: dict[str, Any]) -> AudioChunk:
        return chunk_from_body(body)

    def _done(self, body: dict[str, Any]) -> None:
        self.done = body
