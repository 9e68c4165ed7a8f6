"""A speech request as the metering owner (:mod:`proxy.metering.meter`) runs it: what is speech's own.

:func:`speech_call` makes a :class:`SpeechCall`, a :class:`~proxy.metering.meter.MeteredCall`;
admission, the usage row, the metrics, the access line and the shutdown drain are the owner's::

    async with speech_call(meter, key, model, name, kind, endpoint, ids, prompt_tokens, max_tokens) as call:
        ...                       # the upstream call; call.produced() for its audio, or transcribed()
        await call.finish()       # the normal end: the row is committed before the response ends

Speech's own, here:

- which model a request may use (:class:`SpeechModels`): the registered speech model its name
  resolved to, of the endpoint's kind and running (asked by admission after the key's allow-list,
  before its windows and quota); only that model's name reaches the ledger and the metrics;
- what it made (:meth:`SpeechCall.usage`). Speech costs its ``input`` tokens only (the prompt); a
  transcription costs its transcript's tokens as completion tokens and records the audio's duration
  in ``audio_seconds``. A transcript is billed in full, even past its reservation (a guess from the
  audio's duration): text is capped at its reservation because the model was told to stop there,
  but nothing tells the upstream how long a transcript may be, so the cap billed a 59,000-token
  transcript as 72 on a quota key and 59,000 on an unlimited one (issue 18). Settling above the
  reservation leaves the key over its limit, and its next request is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import ApiError
from proxy.metering.admission import model_not_found
from proxy.metering.meter import Meter, MeteredCall, Usage
from proxy.metering.tokens import count_text_off_loop
from proxy.request_ids import RequestIds
from proxy.speech.catalog import KIND_NAMES, SpeechModel
from proxy.storage.api_keys import ApiKey


def speech_call(
    meter: Meter,
    key: ApiKey,
    model: SpeechModel | None,
    name: str,
    kind: str,
    endpoint: str,
    ids: RequestIds,
    prompt_tokens: int,
    max_tokens: int,
) -> SpeechCall:
    """A request for ``name`` (resolved to ``model``, or None) on an endpoint that needs a ``kind`` model."""
    models = SpeechModels(model, kind)
    return SpeechCall(
        meter=meter,
        key=key,
        endpoint=endpoint,
        ids=ids,
        model=name,
        models=models,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
    )


@dataclass
class SpeechModels:
    """Admission's models for one speech request: the one it resolved to, if it is of the endpoint's
    kind and running."""

    model: SpeechModel | None
    kind: str

    def serves(self, name: str) -> bool:
        return self.model is not None and self.model.name == name

    def context(self, name: str) -> int | None:
        return None  # a remote speech model's input is bounded by its endpoint

    async def unserved(self, name: str) -> ApiError:
        return model_not_found(name)

    async def has(self, name: str) -> bool:
        model = self.model
        if model is None:
            return False
        if model.kind != self.kind:
            raise ApiError(
                400,
                f"the model '{name}' is a {KIND_NAMES[model.kind]} model; this endpoint needs a "
                f"{KIND_NAMES[self.kind]} model",
                param="model",
                code="wrong_model_kind",
            )
        if not model.running:
            raise ApiError(
                503,
                f"the model '{name}' is stopped; an administrator can start it (llmserver models start {name})",
                type="server_error",
                code="model_not_running",
            )
        return True


@dataclass(eq=False, kw_only=True)
class SpeechCall(MeteredCall):
    """One speech request: what its upstream made."""

    completion_tokens: int = 0  # a transcript's tokens, set by :meth:`transcribed`
    audio_seconds: float | None = None

    async def transcribed(self, text: str) -> None:
        """A transcript arrived: billable, its tokens counted in full (off the event loop when large)."""
        self.completion_tokens = await count_text_off_loop(text)
        self.produced()

    def usage(self) -> Usage:
        return Usage(self.completion_tokens, audio_seconds=self.audio_seconds)


def admitted(model: SpeechModel | None) -> SpeechModel:
    """The model of an admitted request (admission refuses an unknown one with a 404, so this only narrows)."""
    if model is None:
        raise ApiError(404, "The model does not exist", code="model_not_found", param="model")
    return model
