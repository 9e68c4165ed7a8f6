"""The HTTP routes of the proxy: each handler reads as parse -> call -> respond."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from proxy.apierror import ApiError, bad_request
from proxy.appkeys import catalog_key, db_key, metrics_key, runtime_key, serving_key, settings_key
from proxy.chunks import DONE_EVENT, ChunkWriter, chat_completion, event, text_completion
from proxy.openai_request import GenerationRequest, parse_chat, parse_completion
from proxy.serving import ClientGone, Generation, before_headers, mid_stream
from runtime.errors import ClientError

log = logging.getLogger(__name__)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def setup_routes(app: web.Application) -> None:
    app.router.add_post(CHAT, chat_completions)
    app.router.add_post(COMPLETIONS, completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model_id:.+}", get_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    s = request.app[settings_key]
    req = parse_chat(await read_json(request), s.default_max_tokens, s.max_tokens_limit)
    return await generate(request, req, CHAT)


async def completions(request: web.Request) -> web.StreamResponse:
    s = request.app[settings_key]
    req = parse_completion(await read_json(request), s.default_max_tokens, s.max_tokens_limit)
    return await generate(request, req, COMPLETIONS)


async def read_json(request: web.Request) -> Any:
    """The body, parsed as JSON whatever its Content-Type says.

    ``curl -d '{...}'`` sends JSON as ``application/x-www-form-urlencoded``; OpenAI's API and
    llama.cpp's server accept it, so a JSON object is accepted under any type. Declared as JSON (or
    not declared), a body that does not parse is a 400 that says why; declared as something else,
    it is most likely a real form: 415, asking for JSON.
    """
    raw = await request.read()
    declared_json = not request.headers.get("Content-Type") or request.content_type == "application/json"
    try:
        body = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError too
        if not declared_json:
            raise _not_json() from None
        if isinstance(exc, UnicodeDecodeError):
            raise bad_request("the request body is not valid UTF-8") from None
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not declared_json and not isinstance(body, dict):
        raise _not_json()
    return body


def _not_json() -> ApiError:
    return ApiError(
        415,
        "the request body must be a JSON object; send JSON with Content-Type: application/json",
        code="unsupported_media_type",
    )


async def generate(request: web.Request, req: GenerationRequest, endpoint: str) -> web.StreamResponse:
    serving = request.app[serving_key]
    gen = await serving.admit(request["api_key"], req, endpoint, request["request_id"])
    serving.metrics.inflight.inc()
    try:
        if req.stream:
            return await _streamed(request, gen)
        return await _buffered(request, gen)
    finally:
        serving.metrics.inflight.dec()


async def _buffered(request: web.Request, gen: Generation) -> web.Response:
    stream = await gen.open_stream()
    gen.serving.metrics.queue_position.observe(stream.position or 0)
    disconnected = False
    try:
        async with stream:
            async for _ in gen.pieces_from(stream, lambda: client_gone(request)):
                if client_gone(request):
                    disconnected = True
                    break
    except ClientGone:
        disconnected = True
    except ClientError as exc:
        error = mid_stream(exc)
        await gen.record(error.status)
        raise error from None
    if disconnected:
        await gen.record(499, disconnected=True)
        raise ConnectionResetError("client went away")
    await gen.record(200)
    req, build = gen.req, (chat_completion if gen.req.messages is not None else text_completion)
    text = (req.prompt or "") + gen.text if req.echo else gen.text
    body = build(gen.request_id, req.model, text, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens)
    return web.json_response(body, headers=gen.rate_headers, dumps=_dumps)


async def _streamed(request: web.Request, gen: Generation) -> web.StreamResponse:
    stream = await gen.open_stream()
    gen.serving.metrics.queue_position.observe(stream.position or 0)
    req = gen.req
    writer = ChunkWriter(gen.request_id, req.model, req.messages is not None, req.include_usage)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "x-request-id": gen.request_id,
            **gen.rate_headers,
        }
    )
    try:
        await response.prepare(request)
        async with stream:
            await response.write(writer.first())
            if req.echo and req.prompt:
                await response.write(writer.text(req.prompt))
            async for piece in gen.pieces_from(stream, lambda: client_gone(request)):
                await response.write(writer.text(piece))
            await response.write(writer.finish(gen.finish_reason))
        await gen.record(200)
        if req.include_usage:
            await response.write(writer.usage(gen.prompt_tokens, gen.completion_tokens))
        await response.write(DONE_EVENT)
    except ConnectionError:  # a failed write, or ClientGone while waiting for the first text
        await gen.record(499, disconnected=True)
        return response
    except (ClientError, ApiError) as exc:
        error = exc if isinstance(exc, ApiError) else mid_stream(exc)
        await gen.record(error.status)
        await _write_quietly(response, event(error.envelope()))
        return response
    await response.write_eof()
    return response


def client_gone(request: web.Request) -> bool:
    """Whether the client closed its connection (noticed without writing to it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
        await response.write_eof()
    except ConnectionError:
        pass


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


async def list_models(request: web.Request) -> web.Response:
    key = request["api_key"]
    try:
        models = await request.app[catalog_key].models()
    except ClientError as exc:
        raise before_headers(exc) from None
    data = [_model_object(m.id, m.created) for m in models.values() if key.allows_model(m.id)]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    key, name = request["api_key"], request.match_info["model_id"]
    try:
        models = await request.app[catalog_key].models()
    except ClientError as exc:
        raise before_headers(exc) from None
    if name not in models or not key.allows_model(name):
        raise ApiError(404, f"The model '{name}' does not exist", code="model_not_found", param="model")
    return web.json_response(_model_object(name, models[name].created))


def _model_object(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "llmserver"}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[db_key].execute_read(lambda conn: conn.execute("SELECT 1").fetchone())
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(request.app[runtime_key].ping(timeout=1.0), 1.5)
        checks["runtime"] = "ok"
    except (ClientError, asyncio.TimeoutError) as exc:
        checks["runtime"] = f"error: {exc or type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    request.app[metrics_key].runtime_up.set(1 if checks["runtime"] == "ok" else 0)
    return web.json_response({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[metrics_key].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
