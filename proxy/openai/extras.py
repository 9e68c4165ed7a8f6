"""``/extras/tokenize``, ``/extras/tokenize/count`` and ``/extras/detokenize``, as llama-cpp-python's
server has them, with the model's own tokenizer (the runtime's ``tokenize``/``detokenize`` ops).

Bodies and answers are llama-cpp-python's: ``{"model", "input", "add_special"?}`` ->
``{"tokens": [...]}`` or ``{"count": n}``; ``{"model", "tokens"}`` -> ``{"text": ...}``.

They are metered requests like any other (issue 18: they were free, unlimited and unrecorded): the
metering owner admits them (key, allow-list, rate windows, quota) and writes their row. Tokenizing is
billed like an embedding, its input's cl100k_base tokens as the prompt; detokenizing like a
generation of its text, reserved as one token per token id and billed as the text's cl100k_base
tokens. Inputs are bounded (:data:`MAX_INPUT_CHARS`, :data:`MAX_TOKENS`): a 413 past the bound.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.appkeys import api_key_key, generations_key, request_ids_key
from proxy.errors import ApiError, bad_request
from proxy.front import read_json
from proxy.metering.generation import Generation
from proxy.metering.request import GenerationRequest, check_model_length, tokenizer_request

MAX_INPUT_CHARS = 256 * 1024  # llama.cpp tokenizes this in about half a second on a desktop core
MAX_TOKENS = 64 * 1024


async def tokenize(request: web.Request) -> web.Response:
    tokens, headers = await _tokens(request, "/extras/tokenize")
    return web.json_response({"tokens": tokens}, headers=headers)


async def tokenize_count(request: web.Request) -> web.Response:
    tokens, headers = await _tokens(request, "/extras/tokenize/count")
    return web.json_response({"count": len(tokens)}, headers=headers)


async def detokenize(request: web.Request) -> web.Response:
    obj = _object(await read_json(request))
    model = _model(obj)
    tokens = obj.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise bad_request("'tokens' must be an array of integers", "tokens")
    if len(tokens) > MAX_TOKENS:
        raise _too_large(f"'tokens' has more than {MAX_TOKENS} entries", "tokens")
    req = tokenizer_request(model, (), len(tokens))
    async with _run(request, req, "/extras/detokenize") as gen:
        text = await gen.detokenize(tokens)
    return web.json_response({"text": text}, headers=gen.rate_headers)


async def _tokens(request: web.Request, endpoint: str) -> tuple[list[int], dict[str, str]]:
    obj = _object(await read_json(request))
    model = _model(obj)
    text, add_special = obj.get("input"), obj.get("add_special", True)
    if not isinstance(text, str):
        raise bad_request("'input' must be a string", "input")
    if len(text) > MAX_INPUT_CHARS:
        raise _too_large(f"'input' is longer than {MAX_INPUT_CHARS} characters", "input")
    if not isinstance(add_special, bool):
        raise bad_request("'add_special' must be a boolean", "add_special")
    async with _run(request, tokenizer_request(model, (text,), 0), endpoint) as gen:
        tokens = await gen.tokenize(add_special)
    return tokens, gen.rate_headers


def _run(request: web.Request, req: GenerationRequest, endpoint: str) -> Generation:
    generations = request.app[generations_key]
    return generations.run(request[api_key_key], req, endpoint, request[request_ids_key])


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def _model(obj: dict[str, Any]) -> str:
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string", "model")
    return check_model_length(model)


def _too_large(message: str, param: str) -> ApiError:
    return ApiError(413, message, param=param, code="input_too_large")
