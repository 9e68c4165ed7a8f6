"""The client of Hugging Face's inference service (the ``hf-inference`` provider of the Inference
Providers router, formerly ``api-inference.huggingface.co``), and its errors as OpenAI envelopes.

Both tasks are one ``POST {base}/models/{repo}`` with the board's token as a bearer:

- text-to-speech: JSON ``{"inputs": text}``; the answer is the audio, streamed on as it arrives.
- speech recognition: the raw audio as the body (streamed from the spooled upload) with its
  Content-Type; the answer is JSON ``{"text": ..., "chunks": [{"text", "timestamp": [a, b]}]?}``.

aiohttp's client rather than ``huggingface_hub``'s ``AsyncInferenceClient``: the latter's
``text_to_speech`` returns the whole audio as ``bytes`` once the response has ended (no streaming),
and its ``automatic_speech_recognition`` wants the audio in memory; both hide the response status
and headers (``estimated_time``, ``retry-after``) behind its own exception types.

Failures translate once, here (:func:`upstream_error`): a model loading upstream -> 503 with
``retry-after``; the token refused (401/403) -> 502 saying the board's token was refused, never
showing it; a timeout -> 504 with ``x-should-retry: false``; any other 4xx passed on with its
message; 5xx and unreachable -> 502.

The upstream is not trusted to be sane (issue 18): its numbers (``estimated_time``, ``Retry-After``)
are taken only when finite and clamped to :data:`MAX_RETRY_SECONDS`; a transcript is read up to
:data:`MAX_TRANSCRIPT_BYTES` (502 past it), and a large one is parsed off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeGuard

import aiohttp

from proxy.errors import ApiError
from proxy.speech.catalog import SpeechModel

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
MAX_RETRY_SECONDS = 3600  # a retry-after beyond an hour is the upstream's nonsense, not a plan
MAX_TRANSCRIPT_BYTES = 8 * 1024 * 1024  # hours of speech as JSON with timestamps fit many times over
OFF_LOOP_BYTES = 64 * 1024  # a larger answer is parsed in a worker thread


@dataclass
class AudioStream:
    """An open text-to-speech answer: its media type and its body, chunk by chunk."""

    content_type: str
    _response: aiohttp.ClientResponse

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc) from None

    def close(self) -> None:
        """Drop the connection (idempotent); an unfinished answer is cancelled upstream."""
        self._response.close()


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: tuple[tuple[float, float, str], ...]  # (start, end, text), when the service gave timestamps


class InferenceClient:
    """One shared aiohttp session towards the inference service."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout: float) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        # The timeout bounds the wait for the answer's headers and every pause inside its body.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)

    def _url(self, model: SpeechModel) -> str:
        return f"{self._base}/models/{model.repo}"

    async def synthesize(self, model: SpeechModel, text: str, accept: str) -> AudioStream:
        """Start a text-to-speech call; the answer's headers are in, its body not yet read."""
        response = await self._post(model, json={"inputs": text}, headers={"Accept": accept})
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return AudioStream(content_type, response)

    async def transcribe(self, model: SpeechModel, body: BinaryIO, content_type: str) -> Transcript:
        """Send the audio (an open file, streamed by aiohttp) for recognition; the transcript."""
        response = await self._post(model, data=body, headers={"Content-Type": content_type})
        try:
            raw = await _read_bounded(response, MAX_TRANSCRIPT_BYTES)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _transport_error(exc) from None
        finally:
            response.close()
        if len(raw) <= OFF_LOOP_BYTES:
            return _parse_transcript(raw)
        return await asyncio.get_running_loop().run_in_executor(None, _parse_transcript, raw)

    async def _post(self, model: SpeechModel, headers: dict[str, str], **kw: Any) -> aiohttp.ClientResponse:
        if model.token_problem:  # never an anonymous call in place of a stored token (issue 25)
            raise ApiError(
                500,
                f"{model.token_problem}; the call was not sent. An administrator must set the server's "
                "encryption key to the one the token was stored with (llmserver doctor tells)",
                type="server_error",
                code="hf_token_unreadable",
            )
        if model.token:
            headers = {**headers, "Authorization": f"Bearer {model.token}"}
        try:
            response = await self._session.post(self._url(model), headers=headers, timeout=self._timeout, **kw)
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(exc) from None
        if response.status >= 400:
            try:
                body = await response.read()
            except (asyncio.TimeoutError, aiohttp.ClientError):
                body = b""
            finally:
                response.close()
            raise upstream_error(response.status, body, response.headers.get("Retry-After"), model)
        return response


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, up to ``limit`` bytes; a 502 past it (the connection is dropped)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    data = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        data += chunk
        if len(data) > limit:
            raise _too_large(limit)
    return bytes(data)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        502,
        f"Hugging Face's inference service sent a transcript larger than {limit} bytes",
        type="server_error",
        code="upstream_error",
    )


def _parse_transcript(raw: bytes) -> Transcript:
    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError too; nested past Python's limit
        answer = None
    return _transcript(answer)


def upstream_error(status: int, body: bytes, retry_after: str | None, model: SpeechModel) -> ApiError:
    """The OpenAI error for an inference-service answer of ``status``."""
    message, estimated = _error_message(body)
    if status == 503 and (estimated is not None or "loading" in message.lower()):
        wait = _seconds(retry_after) or _clamped(estimated if estimated is not None else 20.0)
        return ApiError(
            503,
            f"the model '{model.name}' is loading on Hugging Face's inference service; retry in {wait} s",
            type="server_error",
            code="model_loading",
            headers={"retry-after": str(wait)},
        )
    if status in (401, 403):
        stored = "the stored token" if model.token else "no token is stored"
        return ApiError(
            502,
            f"Hugging Face's inference service refused the board's Hugging Face token for '{model.name}' "
            f"(HTTP {status}; {stored}); an administrator must store a valid token (/admin/api/hf-tokens)",
            type="server_error",
            code="upstream_token_refused",
        )
    if 400 <= status < 500:
        return ApiError(status, f"Hugging Face's inference service: {message}", code="upstream_error")
    return ApiError(
        502,
        f"Hugging Face's inference service failed (HTTP {status}): {message}",
        type="server_error",
        code="upstream_error",
    )


def _transport_error(exc: BaseException) -> ApiError:
    if isinstance(exc, asyncio.TimeoutError):
        return ApiError(
            504,
            "Hugging Face's inference service did not answer in time",
            type="server_error",
            code="upstream_timeout",
            headers={"x-should-retry": "false"},
        )
    return ApiError(
        502,
        f"could not reach Hugging Face's inference service: {type(exc).__name__}",
        type="server_error",
        code="upstream_unreachable",
    )


def _error_message(body: bytes) -> tuple[str, float | None]:
    """(message, estimated seconds until loaded) from an error body: ``{"error": ..., "estimated_time": ...}``."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return (text[:500] or "no message"), None
    if not isinstance(parsed, dict):
        return text[:500], None
    error = parsed.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    if isinstance(error, list):
        error = "; ".join(str(e) for e in error)
    estimated = parsed.get("estimated_time")
    return str(error or text)[:500], float(estimated) if _finite(estimated) else None


def _seconds(value: str | None) -> int | None:
    """A ``Retry-After`` in seconds, if it is a finite number (clamped); None otherwise (an HTTP
    date, ``1e400``, ``nan``: the caller falls back on its own estimate)."""
    try:
        seconds = float(value) if value else math.nan
    except ValueError:
        return None
    return _clamped(seconds) if math.isfinite(seconds) else None


def _clamped(seconds: float) -> int:
    """Whole seconds from 1 to :data:`MAX_RETRY_SECONDS` (``seconds`` is finite)."""
    return min(MAX_RETRY_SECONDS, max(1, math.ceil(seconds)))


def _transcript(answer: object) -> Transcript:
    if isinstance(answer, list) and answer:
        answer = answer[0]
    if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
        raise ApiError(
            502, "Hugging Face's inference service gave no transcript", type="server_error", code="upstream_error"
        )
    segments = []
    for chunk in answer.get("chunks") or []:
        stamp = chunk.get("timestamp") if isinstance(chunk, dict) else None
        if isinstance(stamp, list) and len(stamp) == 2 and all(_finite(t) for t in stamp):
            segments.append((float(stamp[0]), float(stamp[1]), str(chunk.get("text", "")).strip()))
    return Transcript(answer["text"].strip(), tuple(segments))


def _finite(value: object) -> TypeGuard[float]:
    """A JSON number that is a finite float (``json`` reads ``1e400`` as infinity, accepts ``NaN``, and
    reads 400 digits as an int no float can hold)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
