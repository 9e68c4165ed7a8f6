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
            "system_fingerprint": None,
            "choices": [choice],
        }
        if self.include_usage:
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
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": None}
        return event(self._chunk(choice))

    def finish(self, reason: str) -> bytes:
        if self.chat:
            choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
        return event(self._chunk(choice))

    def usage(self, prompt: int, completion: int) -> bytes:
        obj = self._chunk({})
        obj["choices"] = []
        obj["usage"] = usage(prompt, completion)
        return event(obj)
