"""The speech ops of the wire protocol (issue 23): ``speak`` (text to audio) and ``transcribe``.

``speak`` is streamed like a ``generate``: ``accepted`` (queue position), then one ``audio`` frame per
sentence as it is synthesised, then exactly one of ``done`` or ``error``::

    -> {"op": "speak", "model", "input": str, "voice": str (absent: the model's first voice), "speed": 0.25..4}
    <- {"type": "audio", "pcm": <base64 of signed 16-bit little-endian samples>, "sample_rate", "channels", "text"}
    <- {"type": "done", "audio_seconds", "sample_rate", "sentences", "characters",
        "perf": {"queue_ms", "first_audio_ms", "synth_ms"}}

``transcribe`` is queued on the model's worker like an ``embed`` and answered with one ``result``. The
audio file itself (any format the daemon can decode: WAV, MP3, Ogg/Opus, FLAC, M4A, WebM...) travels
as the request message's second ZeroMQ frame, raw, never inside the JSON::

    -> {"op": "transcribe", "model", "language": str|null, "prompt": str|null, "temperature": 0..1,
        "word_timestamps": bool, "task": "transcribe"|"translate"}  +  [audio bytes]
    <- {"type": "result", "text", "language", "duration", "segments": [{"id", "seek", "start", "end",
        "text", "tokens", "temperature", "avg_logprob", "compression_ratio", "no_speech_prob",
        "words": [{"word", "start", "end", "probability"}]?}], "perf": {"queue_ms", "decode_ms", "transcribe_ms"}}

A voice the model lacks, a language an English-only model cannot hear, a file that is not audio: each
is ``bad_request`` with a message (and ``param``) naming the field.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from runtime.api.protocol import ProtocolError

MAX_SPEAK_CHARS = 65_536  # the proxy takes OpenAI's 4096; the daemon's own bound is looser
MAX_AUDIO_BYTES = 256 * 1024 * 1024  # an upload beyond this is refused before it is decoded
SPEED_RANGE = (0.25, 4.0)  # OpenAI's
TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class SpeakSpec:
    """What a ``speak`` asks for. ``speed`` 2 is twice as fast (the engine's length scale halved)."""

    model: str
    input: str
    voice: str | None = None
    speed: float = 1.0


@dataclass(frozen=True)
class TranscribeSpec:
    """What a ``transcribe`` asks for; ``audio`` is the file as uploaded (the request's second frame)."""

    model: str
    audio: bytes
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0  # 0: start greedy and raise it when a segment decodes badly (OpenAI's rule)
    word_timestamps: bool = False
    task: str = "transcribe"


@dataclass(frozen=True)
class AudioChunk:
    """One ``audio`` frame: a sentence's samples (mono or interleaved s16le) and what was said."""

    pcm: bytes
    sample_rate: int
    channels: int = 1
    text: str = ""

    @property
    def seconds(self) -> float:
        return len(self.pcm) / (2 * self.channels * self.sample_rate) if self.sample_rate else 0.0


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProtocolError("'model' must be a non-empty string")
    return model


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"'{key}' must be a string")
    return value or None


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ProtocolError(f"'{key}' must be a number from {lo:g} to {hi:g}")
    return float(value)


def parse_speak(body: dict[str, Any]) -> SpeakSpec:
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError("'input' must be a non-empty string: the text to speak")
    if len(text) > MAX_SPEAK_CHARS:
        raise ProtocolError(f"'input' is longer than {MAX_SPEAK_CHARS} characters")
    speed = _number(body, "speed", 1.0, *SPEED_RANGE)
    return SpeakSpec(_model(body), text, _optional_str(body, "voice"), speed)


def parse_transcribe(body: dict[str, Any], audio: bytes) -> TranscribeSpec:
    if not audio:
        raise ProtocolError("a transcribe request carries the audio file as its second frame")
    if len(audio) > MAX_AUDIO_BYTES:
        raise ProtocolError(f"the audio file is larger than {MAX_AUDIO_BYTES} bytes")
    words = body.get("word_timestamps", False)
    if not isinstance(words, bool):
        raise ProtocolError("'word_timestamps' must be true or false")
    task = body.get("task", "transcribe")
    if task not in TASKS:
        raise ProtocolError(f"'task' must be one of {', '.join(TASKS)}")
    return TranscribeSpec(
        model=_model(body),
        audio=audio,
        language=_optional_str(body, "language"),
        prompt=_optional_str(body, "prompt"),
        temperature=_number(body, "temperature", 0.0, 0.0, 1.0),
        word_timestamps=words,
        task=task,
    )


def speak_to_wire(spec: SpeakSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"model": spec.model, "input": spec.input, "speed": spec.speed}
    if spec.voice is not None:
        body["voice"] = spec.voice
    return body


def transcribe_to_wire(spec: TranscribeSpec) -> dict[str, Any]:
    """The JSON frame of a ``transcribe`` (the audio goes beside it, as its own frame)."""
    return {
        "model": spec.model,
        "language": spec.language,
        "prompt": spec.prompt,
        "temperature": spec.temperature,
        "word_timestamps": spec.word_timestamps,
        "task": spec.task,
    }


def chunk_to_body(chunk: AudioChunk) -> dict[str, Any]:
    return {
        "pcm": base64.b64encode(chunk.pcm).decode("ascii"),
        "sample_rate": chunk.sample_rate,
        "channels": chunk.channels,
        "text": chunk.text,
    }


def chunk_from_body(body: dict[str, Any]) -> AudioChunk:
    try:
        pcm = base64.b64decode(str(body.get("pcm", "")), validate=True)
    except ValueError:
        raise ProtocolError("an audio frame's 'pcm' is not base64") from None
    return AudioChunk(pcm, int(body.get("sample_rate", 0)), int(body.get("channels", 1)), str(body.get("text", "")))
