"""OpenAI response objects: buffered bodies, SSE chunks and the usage block."""

from __future__ import annotations

import json
import time
from typing import Any

from proxy.openai.protocol import usage

DONE_EVENT = b"data: [DONE]\n\n"


def event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class ChunkWriter:
    """Builds the chunks of one streamed response (chat or text completion)."""

    def __init__(self, request_id: str, model: str, chat: bool, include_usage: bool) -> None:
        self.id = ("chatcmpl-" if chat else "cmpl-") + request_id.removeprefix("req_")
        self.chat = chat
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if self.include_usage and self.chat:  # the completion chunk's schema has no null usage
            obj["usage"] = None
        return obj

    def first(self) -> bytes:
        if not self.chat:
            return b""
        delta = {"role": "assistant", "content": ""}
        return event(self._chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}))

    def text(self, piece: str) -> bytes:
        if self.chat:
            choice = {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
        else:  # a completion chunk's finish_reason may not be null: absent until the last chunk
            choice = {"index": 0, "text": piece, "logprobs": None}
        return event(self._chunk(choice))

    def deltas(self, deltas: list[dict[str, Any]]) -> bytes:
        """Chat chunks with these deltas (tool calls), one event each."""
        choices = ({"index": 0, "delta": d, "logprobs": None, "finish_reason": None} for d in deltas)
        return b"".join(event(self._chunk(c)) for c in choices)

    def finish(self, reason: str, logprobs: dict[str, Any] | None = None) -> bytes:
        """The last chunk: the finish reason, and the log-probabilities of the whole answer if asked for."""
        if self.chat:
            choice = {"index": 0, "delta": {}, "logprobs": logprobs, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": "", "logprobs": logprobs, "finish_reason": reason}
        return event(self._chunk(choice))

    def usage(self, prompt: int, completion: int) -> bytes:
        obj = self._chunk({})
        obj["choices"] = []
        obj["usage"] = usage(prompt, completion)
        return event(obj)
