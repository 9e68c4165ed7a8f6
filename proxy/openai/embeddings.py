"""``POST /v1/embeddings``: vectors from a model loaded for embeddings, metered like every request.

``input`` is a string or an array of strings (token arrays are refused: the billing count is of
text); ``encoding_format`` ``float`` or ``base64`` (little-endian float32, as OpenAI sends it);
``dimensions`` is refused because the models here cannot shorten their vectors. The request goes
through ``Generations.run`` like a generation: admission (allow-list, windows, quota), then one
ledger row with the inputs' tokens as the prompt and no completion.
"""

from __future__ import annotations

import base64
import logging
import struct
from typing import Any

from aiohttp import web

from proxy.appkeys import api_key_key, generations_key, request_ids_key
from proxy.errors import bad_request
from proxy.front import read_json
from proxy.metering.request import check_model_length, embedding_request
from proxy.openai.protocol import usage

log = logging.getLogger(__name__)

PATH = "/v1/embeddings"
MAX_INPUTS = 2048  # OpenAI's limit per request
_KNOWN = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


async def embeddings(request: web.Request) -> web.Response:
    obj = await read_json(request)
    model, inputs, encoding = parse_embeddings(obj)
    req = embedding_request(model, inputs)
    generations = request.app[generations_key]
    async with generations.run(request[api_key_key], req, PATH, request[request_ids_key]) as gen:
        vectors = await gen.embed()
    data = [{"object": "embedding", "index": i, "embedding": _encode(v, encoding)} for i, v in enumerate(vectors)]
    body = {"object": "list", "data": data, "model": model, "usage": _usage(gen.prompt_tokens)}
    return web.json_response(body, headers=gen.rate_headers)


def parse_embeddings(obj: Any) -> tuple[str, tuple[str, ...], str]:
    if not isinstance(obj, dict):
        raise bad_request("the request body must be a JSON object")
    model = obj.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a string", "model")
    check_model_length(model)
    unknown = sorted(k for k in obj if k not in _KNOWN)
    if unknown:
        log.debug("ignored unknown request fields: %s", ", ".join(unknown))
    if obj.get("dimensions") is not None:
        raise bad_request("'dimensions' is not supported: these models cannot shorten their vectors", "dimensions")
    encoding = obj.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise bad_request("'encoding_format' must be float or base64", "encoding_format")
    raw = obj.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or len(inputs) > MAX_INPUTS:
        raise bad_request(f"'input' must be a string or an array of 1 to {MAX_INPUTS} strings", "input")
    if not all(isinstance(t, str) for t in inputs):
        raise bad_request("'input' must hold strings (token arrays are not supported)", "input")
    if any(not t for t in inputs):
        raise bad_request("'input' must not contain empty strings", "input")
    return model, tuple(inputs), str(encoding)


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _usage(prompt: int) -> dict[str, int]:
    counts = usage(prompt, 0)
    return {"prompt_tokens": counts["prompt_tokens"], "total_tokens": counts["total_tokens"]}
