"""``POST /v1/completions``."""

from __future__ import annotations

from aiohttp import web

from proxy.appkeys import settings_key
from proxy.front import read_json
from proxy.openai.protocol import parse_completion
from proxy.openai.respond import generate

PATH = "/v1/completions"


async def completions(request: web.Request) -> web.StreamResponse:
    s = request.app[settings_key]
    req = parse_completion(await read_json(request), s.default_max_tokens, s.max_tokens_limit)
    return await generate(request, req, PATH)
