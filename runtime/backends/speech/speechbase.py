"""What the speech backends share: they generate no text (``admit`` refuses a ``generate`` before it
is queued; ``generate`` says so too, should one reach it)."""

from __future__ import annotations

from runtime.api.protocol import ERR_BAD_REQUEST, GenerateSpec
from runtime.backends.base import Backend, BackendError, Cancelled, Emit, Outcome


class SpeechBackend(Backend):
    def generate(self, spec: GenerateSpec, emit: Emit, cancelled: Cancelled) -> Outcome:
        raise BackendError(f"model {spec.model!r} is a {self.kind} model: it generates no text", ERR_BAD_REQUEST)
