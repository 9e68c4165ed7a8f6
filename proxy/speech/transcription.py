"""``POST /v1/audio/transcriptions``: OpenAI's multipart request, the audio streamed through.

The upload is read part by part; the file goes to a temporary file on disk chunk by chunk (never
whole in memory, let alone twice), stopping at ``LLMSERVER_MAX_AUDIO_BYTES`` with a 413. The
inference service then gets it straight from that file. ``language``, ``prompt`` and
``temperature`` are checked as OpenAI checks them; the ``hf-inference`` provider's speech
recognition takes the raw audio as its whole body, so they are not forwarded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from aiohttp import web

from proxy.appkeys import api_key_key, request_ids_key
from proxy.errors import bad_request
from proxy.front import client_gone
from proxy.metering.request import check_model_length
from proxy.metering.settle import unless_gone
from proxy.speech.audio import UPLOAD_FORMATS, audio_duration, upload_format
from proxy.speech.call import admitted, speech_call
from proxy.speech.inference import Transcript
from proxy.speech.service import speech_key
from proxy.speech.upload import Upload, read_upload

PATH = "/v1/audio/transcriptions"
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TOKENS_PER_SECOND = 8  # a generous bound on speech's tokens per second, for the quota reservation


@dataclass(frozen=True)
class TranscriptionRequest:
    model: str
    language: str | None
    response_format: str
    temperature: float


def parse_transcription(fields: dict[str, str]) -> TranscriptionRequest:
    model = fields.get("model", "")
    if not model:
        raise bad_request("model is required (the name of a speech-to-text model)", param="model")
    check_model_length(model)
    response_format = fields.get("response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise bad_request(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)} (got {response_format!r})",
            param="response_format",
        )
    try:
        temperature = float(fields.get("temperature") or 0)
    except ValueError:
        raise bad_request("temperature must be a number from 0 to 1", param="temperature") from None
    if not 0 <= temperature <= 1:
        raise bad_request("temperature must be a number from 0 to 1", param="temperature")
    return TranscriptionRequest(model, fields.get("language") or None, response_format, temperature)


async def create_transcription(request: web.Request) -> web.Response:
    speech = request.app[speech_key]
    upload = await read_upload(request, speech.settings.max_audio_bytes, speech.uploads)
    try:
        return await _transcribe(request, upload)
    finally:
        upload.remove()


async def _transcribe(request: web.Request, upload: Upload) -> web.Response:
    speech = request.app[speech_key]
    req = parse_transcription(upload.fields)
    fmt = upload_format(upload.filename, upload.content_type)
    duration = audio_duration(upload.path, fmt)
    model = await speech.catalog.resolve(req.model)
    budget = math.ceil(duration * TOKENS_PER_SECOND) + 64 if duration else speech.settings.default_max_tokens
    ids = request[request_ids_key]
    key = request[api_key_key]
    async with speech_call(speech.meter, key, model, req.model, "stt", PATH, ids, 0, budget) as call:
        call.audio_seconds = round(duration, 3) if duration is not None else None
        with upload.path.open("rb") as audio:
            send = speech.client.transcribe(admitted(model), audio, UPLOAD_FORMATS[fmt])
            transcript = await unless_gone(send, lambda: client_gone(request))
        await call.transcribed(transcript.text)
        body, content_type = render(transcript, req, duration)
        await call.finish()
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=call.rate_headers)


def render(transcript: Transcript, req: TranscriptionRequest, duration: float | None) -> tuple[str, str]:
    """The body in the asked format, and its media type."""
    fmt = req.response_format
    if fmt == "text":
        return transcript.text + "\n", "text/plain"
    if fmt == "json":
        return json.dumps({"text": transcript.text}, ensure_ascii=False), "application/json"
    segments = transcript.segments or ((0.0, duration or 0.0, transcript.text),)
    if fmt == "srt":
        cues = [f"{i}\n{_stamp(a, ',')} --> {_stamp(b, ',')}\n{t}\n" for i, (a, b, t) in enumerate(segments, 1)]
        return "\n".join(cues), "application/x-subrip"
    if fmt == "vtt":
        cues = [f"{_stamp(a, '.')} --> {_stamp(b, '.')}\n{t}\n" for a, b, t in segments]
        return "WEBVTT\n\n" + "\n".join(cues), "text/vtt"
    verbose = {
        "task": "transcribe",
        "language": req.language or "unknown",
        "duration": duration,
        "text": transcript.text,
        "segments": [
            {"id": i, "seek": 0, "start": a, "end": b, "text": t, "temperature": req.temperature}
            for i, (a, b, t) in enumerate(segments)
        ],
    }
    return json.dumps(verbose, ensure_ascii=False), "application/json"


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
