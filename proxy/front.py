"""What every front (OpenAI's JSON and SSE, speech, Ollama's NDJSON next) does with the HTTP request it
was given, before and while the metering owner runs it: read a JSON body, and notice a client that left.

Reading a body: within a deadline, its nesting checked before it is parsed. The size bound is
aiohttp's ``client_max_size`` (``LLMSERVER_MAX_BODY_BYTES``, a 413). The deadline
(``LLMSERVER_BODY_TIMEOUT``, a 408) is the connection's, for every route (:mod:`proxy.connection`):
a client dripping bytes, or declaring a ``Content-Length`` it never sends, cannot hold a connection
and a request slot for ever. Nesting and lone surrogates are checked as :mod:`proxy.jsontext` says.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from proxy.errors import ApiError, bad_request
from proxy.jsontext import SURROGATE, lone_surrogate, too_deep

MAX_DEPTH = 64  # OpenAI bodies nest a handful of levels (tool schemas perhaps a dozen or two)


async def read_json(request: web.Request) -> Any:
    """The body, parsed as JSON whatever its Content-Type says.

    ``curl -d '{...}'`` sends JSON as ``application/x-www-form-urlencoded``; OpenAI's API and
    llama.cpp's server accept it, so a JSON object is accepted under any type. Declared as JSON (or
    not declared), a body that does not parse is a 400 that says why; declared as something else,
    it is most likely a real form: 415, asking for JSON.
    """
    raw = await request.read()
    _check_depth(raw)
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
    if lone_surrogate(raw, body):
        raise bad_request(f"the request {SURROGATE}")
    return body


def _check_depth(raw: bytes) -> None:
    if too_deep(raw, MAX_DEPTH):
        raise bad_request(f"the request body nests deeper than {MAX_DEPTH} levels", code="body_too_deep")


def _not_json() -> ApiError:
    return ApiError(
        415,
        "the request body must be a JSON object; send JSON with Content-Type: application/json",
        code="unsupported_media_type",
    )


def client_gone(request: web.Request) -> bool:
    """Whether the client closed its connection (noticed without writing to it)."""
    transport = request.transport
    return transport is None or transport.is_closing()
