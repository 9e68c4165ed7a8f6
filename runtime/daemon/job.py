"""A queued request (``Job``) and the outbox its frames leave by (``Outbox``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.api.audio import SpeakSpec, TranscribeSpec
from runtime.api.protocol import EmbedSpec, GenerateSpec


class Outbox(Protocol):
    """Where workers put replies; the server sends them on the ROUTER."""

    def delta(self, identity: bytes, rid: str, text: str) -> None: ...

    def reply(self, identity: bytes, rid: str, kind: str, body: dict[str, Any]) -> None:
        """A frame of the request that is neither text nor its last (a ``speak``'s ``audio``)."""

    def end(self, identity: bytes, rid: str, kind: str, body: dict[str, Any], text: str = "") -> None:
        """The request's last frame (``done`` or ``error``), after ``text`` not sent yet, in one message."""


@dataclass
class Job:
    rid: str
    identity: bytes
    spec: GenerateSpec | EmbedSpec | SpeakSpec | TranscribeSpec
    deadline: float
    enqueued: float = field(default_factory=time.perf_counter)
    aborted: threading.Event = field(default_factory=threading.Event)

    def cancelled(self) -> bool:
        return self.aborted.is_set() or time.time() > self.deadline


def err(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}
