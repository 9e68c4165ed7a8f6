"""``/extras/tokenize``, ``/extras/tokenize/count`` and ``/extras/detokenize``, as llama-cpp-python's
server has them, with the model's own tokenizer (the runtime's ``tokenize``/``detokenize`` ops).

Bodies and answers are llama-cpp-python's: ``{"model", "input", "add_special"?}`` ->
``{"tokens": [...]}`` or ``{"count": n}``; ``{"model", "tokens"}`` -> ``{"text": ...}``. They need an
API key like ``/v1`` (the key's model allow-list applies) and are not metered: nothing is generated.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.appkeys import api_key_key, generations_key
from proxy.errors import ApiError, bad_request
from proxy.openai.body import read_json
from proxy.upstream import runtime_error
from runtime.api.errors import RuntimeClientError

MAX_CHARS = 1 << 20


async def tokenize(request: web.Request) -> web.Response:
    model, text, add_special = await _tokenize_body(request)
    return web.json_response({"tokens": await _tokens(request, model, text, add_special)})


async def tokenize_count(request: web.Request) -> web.Response:
    model, text, add_special = await _tokenize_body(request)
    return web.json_response({"count": len(await _tokens(request, model, text, add_special))})


async def detokenize(request: web.Request) -> web.Response:
    obj = _object(await read_json(request))
    model = await _model(request, obj)
    tokens = obj.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        raise bad_request("'tokens' must be an array of integers", "tokens")
    runtime = request.app[generations_key].runtime
    try:
        return web.json_response({"text": await runtime.detokenize(model, tokens)})
    except RuntimeClientError as exc:
        raise runtime_error(exc) from None


async def _tokenize_body(request: web.Request) -> tuple[str, str, bool]:
    obj = _object(await read_json(request))
    model = await _model(request, obj)
    text, add_special = obj.get("input"), obj.get("add_special", True)
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        raise bad_request(f"'input' must be a string of at most {MAX_CHARS} characters", "input")
    if not isinstance(add_special, bool):
        raise bad_request("'add_special' must be a boolean", "add_special")
    return model, text, add_special


async def _tokens(request: web.Request, model: str, text: str, add_special: bool) -> list[int]:
    runtime = request.app[generations_key].runtime
    try:
        return await runtime.tokenize(model, text, add_special)
    except RuntimeClientError as exc:
        raise runtime_error(exc) from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


async def _model(request: web.Request, obj: dict[str, Any]) -> str:
    """The model, checked against the key's allow-list and the runtime's models."""
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string", "model")
    key = request[api_key_key]
    if not key.allows_model(model):
        raise ApiError(403, f"this API key may not use the model '{model}'", type="permission_error", param="model")
    return model
