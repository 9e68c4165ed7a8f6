"""The /v1 OpenAPI document agrees with the routes, and hypothesis-driven requests against the real
server (real daemon, real model) never get a 5xx, never crash it, and keep its memory bounded."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.app import create_app
from proxy.settings import Settings
from tests.faults.clients import SOAK, rss_bytes
from tests.harness import Daemon, Proxy

DOCUMENT = Path(__file__).resolve().parents[2] / "proxy" / "openai" / "openapi.json"
CASES = 5000 if SOAK else 300
FIGURES: dict[str, int] = {}


def documented() -> set[tuple[str, str]]:
    doc = json.loads(DOCUMENT.read_text())
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item}


def test_the_openapi_document_lists_exactly_the_v1_routes() -> None:
    app = create_app(Settings())
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/v1/") and route.method != "HEAD":
            served.add((route.method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)))
    assert served == documented()


def test_every_documented_error_status_has_the_envelope_schema() -> None:
    doc = json.loads(DOCUMENT.read_text())
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response == {"$ref": "#/components/responses/Error"}, (method, path, status)


# -- fuzzing --------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
models = st.sampled_from(["smollm2", "no-such-model", "", " ", "x" * 401, "smollm2\x00", "../etc"]) | json_values
messages = (
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool", "bot"]) | json_values},
            optional={"content": st.text(max_size=40) | json_values},
        ),
        max_size=3,
    )
    | json_values
)
fields = {
    "max_tokens": st.integers(-2, 3) | json_values,
    "temperature": st.floats(-1, 3) | json_values,
    "top_p": st.floats(-1, 2),
    "top_k": st.integers(-1, 2_000_000),
    "stop": st.text(max_size=4) | st.lists(st.text(max_size=3), max_size=6),
    "seed": st.integers() | json_values,
    "n": st.integers(0, 3),
    "stream": st.booleans() | json_values,
    "stream_options": json_values,
    "echo": st.booleans() | json_values,
}
chat_bodies = st.fixed_dictionaries({"model": models, "messages": messages}, optional=fields)
completion_bodies = st.fixed_dictionaries(
    {"model": models, "prompt": st.text(max_size=40) | json_values}, optional=fields
)
raw_bodies = st.binary(max_size=64) | st.just(b"[" * 5000) | st.just(b'{"model": "' + b"\\" * 999)
requests = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/chat/completions"), chat_bodies.map(lambda b: json.dumps(b).encode())),
    st.tuples(st.just("POST"), st.just("/v1/completions"), completion_bodies.map(lambda b: json.dumps(b).encode())),
    st.tuples(
        st.sampled_from(["POST", "GET", "PUT", "DELETE", "HEAD"]),
        st.sampled_from(
            ["/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/smollm2", "/v1/models/%00", "/v1/x"]
        ),
        raw_bodies,
    ),
)
auth = st.sampled_from(["good", "none", "garbage", "wrong-secret"])
content_types = st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"])


def test_fuzzed_requests_get_no_5xx_and_memory_stays_bounded(shared_daemon: Daemon, make_proxy: object) -> None:
    # A proxy of its own: the fuzzer's wrong keys would get loopback throttled in the shared one.
    proxy: Proxy = make_proxy(shared_daemon.endpoint).start()  # type: ignore[operator]
    key = proxy.make_key("fuzz")
    keys = {"good": key, "none": None, "garbage": "llms_garbage", "wrong-secret": key[:-4] + "0000"}
    assert proxy.proc is not None
    before = rss_bytes(proxy.proc.pid)
    statuses: dict[int, int] = {}

    @settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request=requests, who=auth, content_type=content_types)
    def case(request: tuple[str, str, bytes], who: str, content_type: str) -> None:
        method, path, body = request
        if b'"smollm2"' in body:  # a real generation: keep it short
            body = _short(body)
        headers = {"Content-Type": content_type} if content_type else {}
        if keys[who]:
            headers["Authorization"] = f"Bearer {keys[who]}"
        status = _send(proxy.port, method, path, body, headers)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500 or status == 503, f"{method} {path} {body[:200]!r} -> {status}"

    case()
    after = rss_bytes(proxy.proc.pid)
    assert proxy.proc.poll() is None, "the proxy crashed"
    assert after - before < 64 * 1024 * 1024, f"proxy memory grew {(after - before) >> 20} MB"
    assert key not in proxy.log_path.read_text()
    FIGURES.update(cases=sum(statuses.values()), rss_growth_kb=(after - before) >> 10)
    counts = dict(sorted(statuses.items()))
    print(f"FUZZ {sum(statuses.values())} cases, statuses {counts}, RSS {before >> 20} -> {after >> 20} MB")


def _short(body: bytes) -> bytes:
    obj: Any = json.loads(body)
    if isinstance(obj, dict):
        obj["max_tokens"] = 2
        obj.pop("max_completion_tokens", None)
    return json.dumps(obj).encode()


def _send(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body if method != "GET" else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status >= 400 and method != "HEAD":
            error = json.loads(data)["error"]  # always the envelope
            assert set(error) == {"message", "type", "param", "code"}
            if response.status == 503:
                assert response.getheader("retry-after")
        return response.status
    finally:
        conn.close()


def test_what_the_fuzzer_found_stays_fixed(proxy: Proxy) -> None:
    """Found by this fuzzer: an empty prompt crashed the backend (502), a list as a role was a 500."""
    key = proxy.make_key("found")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    empty_prompt = json.dumps({"model": "smollm2", "prompt": ""}).encode()
    list_role = json.dumps({"model": "smollm2", "messages": [{"role": []}]}).encode()
    assert _send(proxy.port, "POST", "/v1/completions", empty_prompt, headers) == 400
    assert _send(proxy.port, "POST", "/v1/chat/completions", list_role, headers) == 400
