"""Reading a request's JSON body."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from proxy.errors import ApiError, bad_request


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
