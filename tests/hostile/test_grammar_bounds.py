"""Issue 18: a ``response_format`` or tool schema took the runtime daemon down (SIGSEGV in llama.cpp's
grammar code), and schema mistakes were 502s with a daemon traceback each.

The crashes: llama-cpp-python samples with whatever ``llama_sampler_init_grammar`` returns, and that is
NULL for every grammar llama.cpp refuses (over 2,000 rules in nested repetitions: ``maxLength`` 2000,
``maxItems`` 20000, ``a{0,1999}``; left recursion; an empty ``enum``). Now the proxy refuses what a
schema may not ask with a 400 naming the limit (``runtime.api.schema.LIMITS``), and the daemon checks
again and asks llama.cpp before sampling, so a client that reaches it directly cannot crash it either.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2 as httpx
import pytest

from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeRequestError
from runtime.api.output import OutputSpec
from runtime.api.protocol import SamplingParams
from runtime.api.schema import LIMITS
from tests.harness import Daemon, Proxy, demo_spec

pytestmark = pytest.mark.timeout(300)

LEFT_RECURSION = {
    "type": "object",
    "properties": {"x": {"$ref": "#/$defs/a"}},
    "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "integer"}]}},
}
# Each of these crashed the daemon before: the issue's three and four more found by experiment.
CRASHERS: dict[str, tuple[dict[str, Any], str]] = {
    "maxLength 2000": ({"type": "string", "maxLength": 2000}, "maxLength 2000 is more than this server's limit of 500"),
    "maxItems 20000": (
        {"type": "array", "items": {"type": "integer"}, "maxItems": 20000},
        "maxItems 20000 is more than this server's limit of 500",
    ),
    "a{0,1999}": ({"type": "string", "pattern": "^a{0,1999}$"}, "{0,1999} is more than this server's limit of 500"),
    "empty enum": ({"enum": []}, "enum must be a non-empty array"),
    "left recursion": (LEFT_RECURSION, "refers to itself with no object or array in between"),
    # U+0000: every token rejected, one sampled anyway, a C++ exception: std::terminate (SIGABRT).
    "U+0000 const": ({"const": "\u0000"}, "the character U+0000 cannot be generated"),
    "U+0000 in a pattern": ({"type": "string", "pattern": "^\\u0000$"}, "the character U+0000 cannot be generated"),
}
# Schema mistakes: each a 502 with a daemon traceback before (or a crash), now a 400 naming the problem.
MISTAKES: dict[str, tuple[dict[str, Any], str]] = {
    "$ref to a URL": ({"$ref": "https://example.com/schema.json"}, "only references inside the schema"),
    "missing $ref": (
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}},
        "/properties/a/$ref: $ref '#/$defs/nope' points to nothing",
    ),
    "type banana": ({"type": "banana"}, "/type: unknown type 'banana'"),
    "recursive $ref '#'": (
        {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}},
        "$ref '#' (the whole schema) is not supported",
    ),
    "unanchored pattern": ({"type": "string", "pattern": "a+"}, "a pattern must start with ^ and end with $"),
    "minLength over maxLength": ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength 5 is more than"),
    "properties not an object": ({"type": "object", "properties": [1]}, "properties must be an object"),
    "too deep": (
        json.loads('{"type": "array", "items": ' * 40 + "{}" + "}" * 40),
        f"nested more than {LIMITS.depth} levels deep",
    ),
    "huge enum": ({"enum": list(range(LIMITS.enum + 1))}, f"this server's limit is {LIMITS.enum}"),
    "nested repetitions": ({"type": "string", "pattern": "^((a{30}){30})$"}, "spells out more than"),
    "lengths add up": (
        {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 500} for i in range(11)}},
        f"add up to more than {LIMITS.total_repeat}",
    ),
}
CASES = {**CRASHERS, **MISTAKES}


def _as_response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}


def _as_tool(schema: dict[str, Any]) -> dict[str, Any]:
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    return {"tools": [tool], "tool_choice": "required"}


def _post(proxy: Proxy, key: str, extra: dict[str, Any]) -> httpx.Response:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **extra}
    return httpx.post(
        f"{proxy.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("where", ["response_format", "tools"])
def test_a_schema_past_a_limit_or_malformed_is_a_400_naming_it(proxy: Proxy, name: str, where: str) -> None:
    schema, words = CASES[name]
    key = proxy.make_key(f"schema-{where}")
    r = _post(proxy, key, _as_response_format(schema) if where == "response_format" else _as_tool(schema))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == ("response_format" if where == "response_format" else "tools[0].function.parameters")
    assert words in error["message"], error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.asyncio
async def test_the_daemon_refuses_them_itself_and_stays_up(make_daemon: type[Daemon]) -> None:
    """A client that reaches the daemon directly (no proxy in front) gets bad_request, never a crash."""
    daemon = make_daemon("--model", demo_spec(n_threads=1))
    daemon.start()
    async with RuntimeClient(daemon.endpoint) as client:
        for name, (schema, _) in CRASHERS.items():
            for output, param in (
                (OutputSpec(response_format={"type": "json_schema", "schema": schema}), "response_format"),
                (OutputSpec(tools=(_as_tool(schema)["tools"][0],), tool_choice="required"), "tools"),
            ):
                with pytest.raises(RuntimeRequestError) as caught:
                    async with client.generate(
                        "smollm2", prompt="Hi", params=SamplingParams(max_tokens=2), output=output, timeout=60
                    ) as stream:
                        async for _ in stream:
                            pass
                assert caught.value.code == "bad_request", (name, caught.value)
                assert str(caught.value.extra.get("param", "")).startswith(param), (name, caught.value.extra)
                assert daemon.alive(), f"{name} ({param}) took the daemon down:\n{daemon.log_text()[-2000:]}"
        text = ""
        async with client.generate("smollm2", prompt="Hello", params=SamplingParams(max_tokens=4)) as stream:
            async for piece in stream:
                text += piece
        assert stream.done is not None and stream.done.completion_tokens > 0
    assert "Traceback" not in daemon.log_text()


def test_the_largest_schemas_allowed_are_answered(proxy: Proxy) -> None:
    """Every limit at its bound compiles and samples: the bounds refuse only what they must."""
    key = proxy.make_key("largest")
    largest = {
        "type": "object",
        "properties": {
            "s": {"type": "string", "minLength": 1, "maxLength": LIMITS.repeat},
            "a": {"type": "array", "items": {"type": "integer"}, "maxItems": LIMITS.repeat},
            "p": {"type": "string", "pattern": f"^[a-z]{{0,{LIMITS.repeat}}}$"},
            "e": {"enum": [f"v{i}" for i in range(LIMITS.enum)]},
        },
        "required": ["s", "a", "p", "e"],
    }
    # A tool's schema is in the prompt too: the enum's 500 values would not fit the demo model's context.
    in_tool = {**largest, "properties": {k: v for k, v in largest["properties"].items() if k != "e"}}
    in_tool["required"] = ["s", "a", "p"]
    for extra in (_as_response_format(largest), _as_tool(in_tool)):
        started = time.monotonic()
        r = _post(proxy, key, extra)
        assert r.status_code == 200, r.text
        assert time.monotonic() - started < 60


def test_a_recursive_schema_through_an_array_is_answered(proxy: Proxy) -> None:
    """Recursion that writes something before it recurses (a tree) is fine, as are pydantic's $defs in tools."""
    key = proxy.make_key("tree")
    node = {
        "type": "object",
        "properties": {
            "v": {"type": "integer"},
            "kids": {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 2},
        },
        "required": ["v", "kids"],
    }
    tree = {"type": "object", "properties": {"t": {"$ref": "#/$defs/n"}}, "required": ["t"], "$defs": {"n": node}}
    r = _post(proxy, key, _as_response_format(tree))
    assert r.status_code == 200, r.text
    r = _post(proxy, key, _as_tool(tree))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] in ("length", "tool_calls")


def test_a_hostile_schema_is_refused_quickly(proxy: Proxy) -> None:
    """The proxy's check costs at most ``LIMITS.nodes`` steps: a schema near the 1 MB body limit is refused at once."""
    key = proxy.make_key("quick")
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(25_000)}}
    started = time.monotonic()
    r = _post(proxy, key, _as_response_format(wide))
    elapsed = time.monotonic() - started
    assert r.status_code == 400 and "this server's limit" in r.json()["error"]["message"], r.text
    assert elapsed < 5, f"refused after {elapsed:.1f} s"
