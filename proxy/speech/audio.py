"""Audio formats: what OpenAI's clients ask for, what the inference service gives, and the little
conversion the standard library allows (WAV -> raw PCM), so no bytes ever go out mislabelled.

Speech: a requested ``response_format`` the upstream gives is passed through as it streams; ``pcm``
is cut out of a 16-bit PCM WAV as it streams and converted to OpenAI's 24 kHz mono
(:mod:`proxy.speech.resample`; ``x-audio-sample-rate`` / ``x-audio-channels`` say so).
Anything else is a 400 naming ``response_format`` and what this model can give. No format asked
for: the upstream's own, with its own media type.

Transcription uploads: the formats OpenAI accepts, recognised by file name or media type; the
duration read from WAV (``wave``) and FLAC (its STREAMINFO block) files.
"""

from __future__ import annotations

import contextlib
import struct
import wave
from pathlib import Path

from proxy.errors import ApiError, bad_request
from proxy.speech.resample import OPENAI_PCM_RATE, PcmResampler

SPEECH_FORMATS = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_UPSTREAM_TYPES = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/opus": "opus",
    "audio/aac": "aac",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
    "audio/vnd.wave": "wav",
}
# What each format can be turned into on the way out (besides itself).
_CONVERSIONS = {"wav": ("pcm",)}

UPLOAD_FORMATS = {
    "flac": "audio/flac",
    "m4a": "audio/mp4",
    "mp3": "audio/mpeg",
    "mp4": "audio/mp4",
    "mpeg": "audio/mpeg",
    "mpga": "audio/mpeg",
    "oga": "audio/ogg",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "webm": "audio/webm",
}
_UPLOAD_TYPES = {
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/m4a": "m4a",
    "audio/x-m4a": "m4a",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/webm": "webm",
    "video/mp4": "mp4",
    "video/webm": "webm",
}


class AudioFormatError(ApiError):
    """The upstream's audio cannot be given in the format asked for."""


def speech_format(value: object) -> str | None:
    """A request's ``response_format`` (None: not given); a 400 naming the field otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in SPEECH_FORMATS:
        raise bad_request(
            f"response_format must be one of {', '.join(SPEECH_FORMATS)} (got {value!r})", param="response_format"
        )
    return value


class Passthrough:
    """The upstream's bytes, as they come."""

    def __init__(self, content_type: str) -> None:
        self.content_type = content_type
        self.headers: dict[str, str] = {}

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""


class WavToPcm:
    """The samples of a 16-bit PCM WAV stream, its header dropped, as OpenAI's ``pcm`` (24 kHz mono)."""

    content_type = SPEECH_FORMATS["pcm"]

    def __init__(self) -> None:
        self._head = b""
        self._in_data = False
        self._resampler: PcmResampler | None = None
        self.headers: dict[str, str] = {}

    def feed(self, chunk: bytes) -> bytes:
        if self._in_data:
            assert self._resampler is not None
            return self._resampler.feed(chunk)
        self._head += chunk
        return self._parse()

    def finish(self) -> bytes:
        if not self._in_data or self._resampler is None:
            raise AudioFormatError(502, "the inference service's WAV audio has no data", type="server_error")
        return self._resampler.finish()

    def _parse(self) -> bytes:
        head = self._head
        if len(head) >= 12 and (head[:4] != b"RIFF" or head[8:12] != b"WAVE"):
            raise _not_pcm("it is not a RIFF/WAVE stream")
        pos = 12
        while len(head) >= pos + 8:
            chunk_id, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
            if chunk_id == b"data":
                if self._resampler is None:
                    raise _not_pcm("its data comes before its format")
                self._in_data = True
                self._head = b""
                return self._resampler.feed(head[pos + 8 :])
            if len(head) < pos + 8 + size:
                return b""
            if chunk_id == b"fmt ":
                self._check_fmt(head[pos + 8 : pos + 8 + size])
            pos += 8 + size + (size & 1)
        return b""

    def _check_fmt(self, fmt: bytes) -> None:
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag not in (1, 0xFFFE) or bits != 16:
            raise _not_pcm(f"its samples are not 16-bit PCM (format {tag}, {bits} bits)")
        if not channels or not rate:
            raise _not_pcm(f"its format says {rate} Hz and {channels} channels")
        self._resampler = PcmResampler(rate, channels)
        self.headers = {"x-audio-sample-rate": str(OPENAI_PCM_RATE), "x-audio-channels": "1"}


def _not_pcm(why: str) -> AudioFormatError:
    return AudioFormatError(
        400, f"response_format 'pcm' cannot be made from this model's WAV audio: {why}", param="response_format"
    )


Converter = Passthrough | WavToPcm


def converter(upstream_type: str, requested: str | None, model: str) -> Converter:
    """How to deliver audio of ``upstream_type`` as ``requested``; a 400 naming response_format if it cannot."""
    given = _UPSTREAM_TYPES.get(upstream_type)
    if requested is None:
        if not upstream_type.startswith("audio/"):
            raise AudioFormatError(
                502,
                f"the inference service answered with {upstream_type or 'no media type'}, not audio",
                type="server_error",
                code="upstream_error",
            )
        return Passthrough(upstream_type)
    if given == requested:
        return Passthrough(SPEECH_FORMATS[requested])
    if given is not None and requested in _CONVERSIONS.get(given, ()):
        return WavToPcm()
    can = [given, *_CONVERSIONS.get(given, ())] if given else []
    offer = f"it can give {', '.join(can)}" if can else f"the inference service gives {upstream_type or 'unknown'}"
    raise AudioFormatError(
        400,
        f"response_format '{requested}' is not available for the model '{model}': {offer}",
        param="response_format",
        code="unsupported_response_format",
    )


def upload_format(filename: str | None, content_type: str | None) -> str:
    """The upload's format by its file name's extension, else its media type; a 400 naming them all."""
    ext = Path(filename or "").suffix.lower().lstrip(".")
    if ext in UPLOAD_FORMATS:
        return ext
    if not ext and content_type in _UPLOAD_TYPES:
        return _UPLOAD_TYPES[content_type]
    raise bad_request(
        f"Invalid file format. Supported formats: {sorted(UPLOAD_FORMATS)}", param="file", code="invalid_file_format"
    )


def audio_duration(path: Path, fmt: str) -> float | None:
    """Seconds of audio in a WAV or FLAC file; None for other formats or a header that does not parse."""
    if fmt == "wav":
        with contextlib.suppress(wave.Error, EOFError, OSError):
            with wave.open(str(path), "rb") as w:
                return w.getnframes() / w.getframerate() if w.getframerate() else None
        return None
    if fmt == "flac":
        return _flac_duration(path)
    return None


def _flac_duration(path: Path) -> float | None:
    """From the STREAMINFO block: 20 bits of sample rate and 36 bits of total samples (0 = unknown)."""
    with path.open("rb") as f:
        head = f.read(4 + 4 + 34)
    if len(head) < 42 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return None
    info = int.from_bytes(head[8 + 10 : 8 + 18], "big")
    rate, total = info >> 44, info & ((1 << 36) - 1)
    return total / rate if rate and total else None
