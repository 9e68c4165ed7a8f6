"""Issue 18: hypothesis-made ``response_format`` and tool schemas against the real stack (proxy, daemon,
model): every answer is a 200 or a 400 with OpenAI's envelope naming the field, and the daemon is alive
and answers a plain chat afterwards. A few hundred schemas in ``make test``, thousands in ``make soak``.

The schemas mix what real clients send (pydantic-like objects, arrays, enums, patterns, ``$defs``)
with what broke the daemon (huge counts, empty enums, left recursion, remote and missing ``$ref``,
unknown types, malformed patterns).
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults.clients import SOAK
from tests.harness import Daemon, Proxy, demo_spec

CASES = 4000 if SOAK else 150
pytestmark = pytest.mark.timeout(3600 if SOAK else 600)  # a shared machine can be slow

TYPES = ["string", "number", "integer", "boolean", "object", "array", "null", "banana", 3]
counts = (
    st.integers(0, 4) | st.integers(0, 600) | st.sampled_from([1000, 1100, 1999, 2000, 20000, -1, 10**9]) | st.just("5")
)
patterns = st.sampled_from(
    [
        "^a{0,1999}$",
        "^[a-z]{1,5}$",
        "^(ab|c)*$",
        "a+",
        "^((a{30}){30})$",
        "^\\d{3}-\\d{4}$",
        "^(a$",
        '^[^"]{0,10}$',
        "^" + "(" * 20 + "a" + ")" * 20 + "$",
        "^(?=a)b$",
        "^[a-z]{0,500}[0-9]{0,500}$",
    ]
) | st.text(max_size=12).map(lambda t: f"^{t}$")
refs = st.sampled_from(["#/$defs/a", "#/$defs/b", "#", "#/nope", "https://example.com/s.json", "#/properties/x", "a"])
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6)
enums = st.lists(scalars, max_size=6) | st.just([]) | st.integers(400, 700).map(lambda n: [f"v{i}" for i in range(n)])
names = st.sampled_from(["x", "y", "name", "a b", "ü", ""]) | st.text(max_size=5)
leaf = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), max_size=3),
        "minLength": counts,
        "maxLength": counts,
        "pattern": patterns,
        "enum": enums,
        "const": scalars,
        "format": st.sampled_from(["date", "uuid", "email", "date-time", "time"]),
        "$ref": refs,
    },
)


def _extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["object", "array", None]),
            "properties": st.dictionaries(names, inner, max_size=4),
            "required": st.lists(names, max_size=3) | st.just("x"),
            "additionalProperties": st.booleans() | inner,
            "items": inner | st.booleans(),
            "prefixItems": st.lists(inner, max_size=2),
            "minItems": counts,
            "maxItems": counts,
            "anyOf": st.lists(inner, max_size=3),
            "oneOf": st.lists(inner, min_size=1, max_size=2),
            "allOf": st.lists(inner, min_size=1, max_size=2),
            "$defs": st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2),
            "$ref": refs,
        },
    )


schemas = st.recursive(leaf, _extend, max_leaves=10)
# tool_choice auto samples without a grammar unless the model starts a call: the proxy's checks are what it tests
placements = st.sampled_from(["response_format"] * 3 + ["tools"] * 2 + ["tools-auto"])


def _body(schema: Any, where: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
        "temperature": 0,
    }
    if where == "response_format":
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    else:
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
        body["tool_choice"] = "required" if where == "tools" else "auto"
    return body


def _post(port: int, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_fuzzed_schemas_get_a_200_or_a_400_and_never_crash_the_daemon(
    make_daemon: type[Daemon], make_proxy: Any
) -> None:
    daemon = make_daemon("--model", demo_spec(n_threads=2))
    daemon.start()
    proxy: Proxy = make_proxy(daemon.endpoint).start()
    key = proxy.make_key("schema-fuzz")
    statuses: dict[int, int] = {}

    @settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(schema=schemas, where=placements)
    def case(schema: Any, where: str) -> None:
        status, answer = _post(proxy.port, key, _body(schema, where))
        statuses[status] = statuses.get(status, 0) + 1
        assert daemon.alive(), f"the daemon died on {json.dumps(schema)[:300]} ({where})"
        assert status in (200, 400), f"{status} {answer} for {json.dumps(schema)[:300]} ({where})"
        if status == 400:
            error = answer["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["type"] == "invalid_request_error"
            field = "response_format" if where == "response_format" else "tools"
            assert str(error["param"]).startswith(field) or error["code"] == "context_length_exceeded", error

    case()
    assert daemon.alive()
    status, answer = _post(proxy.port, key, _body({"type": "object"}, "response_format") | {"response_format": None})
    assert status == 200 and answer["usage"]["completion_tokens"] > 0
    counts_seen = dict(sorted(statuses.items()))
    print(f"SCHEMA FUZZ {sum(statuses.values())} schemas, statuses {counts_seen}, daemon alive, a plain chat answers")
