"""``POST /v1/audio/speech``: text to audio, streamed to the client as the inference service sends it.

The response's headers go out with the first audio bytes (so a refusal or an upstream error before
them is a real HTTP status with an envelope). After that, an upstream failure can only cut the
connection: the client sees an incomplete chunked body, never a truncated file passed off as whole.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from aiohttp import web

from proxy.appkeys import api_key_key, request_ids_key
from proxy.errors import ApiError, bad_request
from proxy.front import client_gone, read_json
from proxy.metering.request import check_model_length
from proxy.metering.settle import unless_gone
from proxy.metering.tokens import count_text
from proxy.speech.audio import SPEECH_FORMATS, Converter, converter, speech_format
from proxy.speech.call import SpeechCall, admitted, speech_call
from proxy.speech.catalog import SpeechModel
from proxy.speech.inference import AudioStream
from proxy.speech.service import Speech, speech_key

log = logging.getLogger(__name__)

PATH = "/v1/audio/speech"
MAX_INPUT_CHARS = 4096  # OpenAI's limit
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")


@dataclass(frozen=True)
class SpeechRequest:
    model: str
    input: str
    voice: str
    response_format: str | None


def parse_speech(body: object) -> SpeechRequest:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model, text, voice = body.get("model"), body.get("input"), body.get("voice")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required (the name of a text-to-speech model)", param="model")
    check_model_length(model)
    if not isinstance(text, str) or not text.strip():
        raise bad_request("input is required: the text to speak", param="input")
    if len(text) > MAX_INPUT_CHARS:
        raise bad_request(f"input is longer than {MAX_INPUT_CHARS} characters", param="input")
    if not isinstance(voice, str) or not voice:
        raise bad_request("voice is required", param="voice")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        raise bad_request("speed must be a number from 0.25 to 4.0", param="speed")
    if not math.isclose(speed, 1.0):
        raise bad_request("speed other than 1.0 is not supported by Hugging Face's inference service", param="speed")
    return SpeechRequest(model, text, voice, speech_format(body.get("response_format")))


async def create_speech(request: web.Request) -> web.StreamResponse:
    req = parse_speech(await read_json(request))
    speech = request.app[speech_key]
    model = await speech.catalog.resolve(req.model)
    ids = request[request_ids_key]
    key = request[api_key_key]
    async with speech_call(speech.meter, key, model, req.model, "tts", PATH, ids, count_text(req.input), 0) as call:
        _check_voice(admitted(model), req.voice)
        return await _stream(request, speech, admitted(model), req, call)


def _check_voice(model: SpeechModel, voice: str) -> None:
    voices = model.voices or OPENAI_VOICES
    if voice not in voices:
        raise bad_request(f"voice '{voice}' is not one of this model's voices: {', '.join(voices)}", param="voice")


async def _stream(
    request: web.Request, speech: Speech, model: SpeechModel, req: SpeechRequest, call: SpeechCall
) -> web.StreamResponse:
    accept = SPEECH_FORMATS[req.response_format] if req.response_format else "audio/*"
    upstream = await unless_gone(speech.client.synthesize(model, req.input, accept), lambda: client_gone(request))
    response: web.StreamResponse | None = None
    try:
        convert = converter(upstream.content_type, req.response_format, req.model)
        async with aclosing(_converted(upstream, convert)) as pieces:
            async for out in pieces:
                if response is None:
                    response = await _open(request, call, convert.content_type, convert.headers)
                call.produced()
                await response.write(out)
        if response is None:
            response = await _open(request, call, convert.content_type, convert.headers)
        call.produced()
        await call.finish()  # the usage row is committed before the response is complete
    except ApiError as exc:
        if response is None:
            raise  # nothing sent yet: a real status and envelope
        log.warning("request %s: the audio stream broke after its headers: %s", call.ids.server, exc.message)
        await call.end(exc)
        _cut(request)  # the body is incomplete: say so by not ending it
        return response
    finally:
        upstream.close()
    await response.write_eof()
    return response


async def _converted(upstream: AudioStream, convert: Converter) -> AsyncGenerator[bytes, None]:
    """The upstream's chunks through ``convert``, empty pieces skipped."""
    async for chunk in upstream.chunks():
        out = convert.feed(chunk)
        if out:
            yield out
    tail = convert.finish()
    if tail:
        yield tail


async def _open(request: web.Request, call: SpeechCall, content_type: str, extra: dict[str, str]) -> web.StreamResponse:
    ids = request[request_ids_key]
    headers = {"Content-Type": content_type, "x-request-id": ids.server, **extra, **call.rate_headers}
    if ids.client:
        headers["x-client-request-id"] = ids.client
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    call.streamed = True
    await response.prepare(request)
    return response


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
