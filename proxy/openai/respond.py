"""A generation answered buffered (one JSON body) or streamed (server-sent events).

The response headers of a stream go out once the runtime has queued the request, so a refusal (the
model busy or unknown, the runtime down) is a real HTTP status. After that, an error (a prompt too
long for the model's context, found when the model takes it up, included) is one
``data: {"error": ...}`` event followed by ``data: [DONE]``, as vLLM ends a failed stream: the
official SDKs raise on the error event, and a plain SSE reader still sees the stream end.
"""

from __future__ import annotations

import json
import logging
from contextlib import aclosing
from typing import Any

from aiohttp import web

from proxy.appkeys import api_key_key, generations_key, request_ids_key
from proxy.errors import ApiError
from proxy.front import client_gone
from proxy.metering.generation import Generation
from proxy.metering.request import GenerationRequest
from proxy.openai.answer import chat_logprobs, completion_logprobs, tool_call_deltas, tool_call_objects
from proxy.openai.protocol import chat_completion, text_completion
from proxy.openai.sse import DONE_EVENT, ChunkWriter, event

log = logging.getLogger(__name__)


async def generate(request: web.Request, req: GenerationRequest, endpoint: str) -> web.StreamResponse:
    """Parse is done; run the generation and respond."""
    generations = request.app[generations_key]
    async with generations.run(request[api_key_key], req, endpoint, request[request_ids_key]) as gen:
        await gen.open()
        if req.stream:
            return await _streamed(request, gen)
        await _collect(request, gen)
    return _buffered_body(gen)


async def _collect(request: web.Request, gen: Generation) -> None:
    async with aclosing(gen.pieces(lambda: client_gone(request))) as pieces:
        async for _ in pieces:
            if client_gone(request):
                raise ConnectionResetError("the client went away")


def _buffered_body(gen: Generation) -> web.Response:
    req = gen.req
    counts = (gen.finish_reason, gen.prompt_tokens, gen.completion_tokens)
    entries = gen.done.logprobs if gen.done else None
    if req.chat:
        calls = tool_call_objects(gen.tool_calls)
        body = chat_completion(gen.request_id, req.model, gen.text, *counts, calls, chat_logprobs(entries))
    else:
        prefix = (req.prompt or "") if req.echo else ""
        logprobs = completion_logprobs(entries, len(prefix))
        body = text_completion(gen.request_id, req.model, prefix + gen.text, *counts, logprobs)
    return web.json_response(body, headers=gen.rate_headers, dumps=_dumps)


def _closing_chunks(gen: Generation, writer: ChunkWriter) -> bytes:
    """After the text: the tool calls (streamed as OpenAI streams them) and the finish chunk."""
    entries = gen.done.logprobs if gen.done else None
    calls = writer.deltas(tool_call_deltas(tool_call_objects(gen.tool_calls))) if gen.tool_calls else b""
    if gen.req.chat:
        return calls + writer.finish(gen.finish_reason, chat_logprobs(entries))
    offset = len(gen.req.prompt or "") if gen.req.echo else 0
    return writer.finish(gen.finish_reason, completion_logprobs(entries, offset))


async def _streamed(request: web.Request, gen: Generation) -> web.StreamResponse:
    req = gen.req
    writer = ChunkWriter(gen.request_id, req.model, req.chat, req.include_usage)
    response = await _open(request, gen, writer)
    try:
        async with aclosing(gen.pieces(lambda: client_gone(request))) as pieces:
            async for piece in pieces:
                await response.write(writer.text(piece))
        await response.write(_closing_chunks(gen, writer))
        await gen.finish()
    except ConnectionError:
        raise  # the client left: nobody to tell (the generation records it)
    except Exception as exc:
        error = exc if isinstance(exc, ApiError) else _internal(gen, exc)
        await gen.end(error)
        await _write_quietly(response, event(error.envelope()) + DONE_EVENT)
        return response
    if req.include_usage:
        await response.write(writer.usage(gen.prompt_tokens, gen.completion_tokens))
    await response.write(DONE_EVENT)
    await response.write_eof()
    return response


async def _open(request: web.Request, gen: Generation, writer: ChunkWriter) -> web.StreamResponse:
    """Send the headers and the opening chunk (with an echoed prompt)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **gen.rate_headers}
    )
    _id_headers(request, response)
    await response.prepare(request)
    await response.write(writer.first())
    if gen.req.echo and gen.req.prompt:
        await response.write(writer.text(gen.req.prompt))
    return response


def _internal(gen: Generation, exc: Exception) -> ApiError:
    """A bug after the headers went out: logged with its traceback, told to the client as a 500 event."""
    log.error("unhandled error in the stream of request %s", gen.request_id, exc_info=exc)
    return ApiError(500, f"internal server error (request {gen.request_id})", type="server_error")


def _id_headers(request: web.Request, response: web.StreamResponse) -> None:
    ids = request[request_ids_key]
    response.headers["x-request-id"] = ids.server
    if ids.client:
        response.headers["x-client-request-id"] = ids.client


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
        await response.write_eof()
    except ConnectionError:
        pass


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
