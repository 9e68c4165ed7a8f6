"""Issue 20: the admin JSON API speaks one idiom. Every body field of every route in
``admin_ui/openapi.json``, sent with a value of a JSON type its schema does not allow, is a 400 in the
one envelope (``{"error": {"status", "message", "type", "field"}}``) naming that field; a body past
the size bound is a 413, one nested past the depth bound a 400, an unknown field a 400 naming it;
errors the middleware answers (a key that does not exist) have the same shape as the API's own.
In-process console over a real SQLite file (the fixtures of ``test_audit_owner``)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from admin_ui.api.common import MAX_BODY, MAX_DEPTH
from tests.admin.test_audit_owner import ROOT, Console, hub, local_console  # noqa: F401 (fixtures)

DOCUMENT = json.loads((ROOT / "admin_ui" / "openapi.json").read_text())
PATH_VALUES = {"{key_id}": "1", "{user_id}": "2", "{name}": "local", "{id}": "1", "{token_id}": "1"}
# A value of each JSON type, with the schema types it satisfies.
WRONG: list[tuple[Any, set[str]]] = [
    ("text", {"string"}),
    (12345, {"integer", "number"}),
    (True, {"boolean"}),
    ([1], {"array"}),
    ({"a": 1}, {"object"}),
]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _resolve(DOCUMENT["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]])
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    schema = _resolve(schema)
    kind = schema.get("type")
    if kind is None and "enum" in schema:
        return {"string" if isinstance(v, str) else "integer" for v in schema["enum"] if v is not None}
    return {kind} if isinstance(kind, str) else set(kind or ())


def _fields() -> list[Any]:
    params = []
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if not body:
                continue
            schema = _resolve(body["content"]["application/json"]["schema"])
            for name, prop in (schema.get("properties") or {}).items():
                allowed = _types(prop)
                wrong = next(value for value, types in WRONG if not types & allowed)
                params.append(pytest.param(method.upper(), path, name, wrong, id=f"{method.upper()} {path} {name}"))
    return params


def _url(path: str) -> str:
    for placeholder, value in PATH_VALUES.items():
        path = path.replace(placeholder, value)
    return "/admin" + path


async def _send(c: Console, method: str, path: str, data: bytes) -> tuple[int, dict[str, Any]]:
    headers = {"X-CSRF-Token": c.csrf, "Content-Type": "application/json"}
    response = await c.http.request(method, _url(path), data=data, headers=headers)
    return response.status, await response.json()


@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "path", "name", "wrong"), _fields())
async def test_a_wrong_type_is_a_400_naming_the_field(
    method: str,
    path: str,
    name: str,
    wrong: Any,
    local_console: Console,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 20: types checked for every field of every documented body, not coerced."""
    status, body = await _send(local_console, method, path, json.dumps({name: wrong}).encode())
    assert status == 400, (status, body)
    assert body["error"]["field"] == name and body["error"]["type"] == "invalid_request", body


@pytest.mark.asyncio
async def test_bodies_are_bounded_and_every_error_has_one_envelope(
    local_console: Console,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 20: size and depth bounds, unknown fields, and the middleware's errors in the same envelope."""
    big = json.dumps({"name": "x" * MAX_BODY}).encode()
    status, body = await _send(local_console, "POST", "/api/api-keys", big)
    assert (status, body["error"]["type"]) == (413, "too_large"), body
    deep = json.dumps({"params": json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)}).encode()
    status, body = await _send(local_console, "PATCH", "/api/models/{name}", deep)
    assert status == 400 and "nested" in body["error"]["message"], body
    status, body = await _send(local_console, "POST", "/api/hf-tokens", b'{"label": "x", "colour": "red"}')
    assert (status, body["error"]["field"]) == (400, "colour"), body
    for path in ("/admin/api/api-keys/999", "/admin/api/models/nobody", "/admin/api/no-such-route"):
        response = await local_console.http.get(path)
        error = (await response.json())["error"]
        assert response.status == 404 and set(error) == {"status", "message", "type"}, (path, error)
        assert error["type"] == "not_found", (path, error)
