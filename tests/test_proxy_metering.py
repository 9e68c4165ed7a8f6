"""Quotas under concurrency, ledger durability, client disconnects and bad input (issue 3)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx  # what the openai SDK itself uses
import openai
import pytest
from openai import AsyncOpenAI

from runtime.api.client import RuntimeClient
from tests.harness import Daemon, Proxy

HELLO = [{"role": "user", "content": "Count to ten, please."}]


def test_concurrent_requests_never_exceed_the_quota(proxy: Proxy) -> None:
    # Requests past the point where prompt + max_tokens fits are capped to what is left rather than refused
    # (issue 14), so every admitted request runs: a small limit keeps the model's work small.
    limit = 200
    key = proxy.make_key("quota", token_limit=limit)

    async def run() -> list[object]:
        c = AsyncOpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=120)

        async def one() -> object:
            try:
                return await c.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=40)
            except openai.RateLimitError as exc:
                return exc

        try:
            return await asyncio.gather(*(one() for _ in range(20)))
        finally:
            await c.close()

    results = asyncio.run(run())
    served = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert served and refused, "the limit should admit some requests and refuse others"
    assert all(r.code == "insufficient_quota" for r in refused)
    received = sum(r.usage.total_tokens for r in served)  # type: ignore[attr-defined]
    (ledger,) = proxy.query(
        "SELECT SUM(prompt_tokens + completion_tokens) FROM token_usage_events e "
        "JOIN api_keys k ON k.id = e.api_key_id WHERE k.name = 'quota' AND e.status = 200"
    )
    (counters,) = proxy.query("SELECT tokens_used, tokens_reserved, request_count FROM api_keys WHERE name='quota'")
    refused_rows = proxy.query(
        "SELECT COUNT(*), SUM(completion_tokens) FROM token_usage_events e "
        "JOIN api_keys k ON k.id = e.api_key_id WHERE k.name = 'quota' AND e.status = 429"
    )
    assert received <= limit
    assert ledger[0] == received
    # Refused requests are recorded (one row each) and bill nothing.
    assert counters == (received, 0, 20)
    assert refused_rows[0] == (len(refused), 0)


def test_sigkill_loses_no_usage_of_a_completed_response(make_proxy: object, shared_daemon: Daemon) -> None:
    proxy: Proxy = make_proxy(shared_daemon.endpoint).start()  # type: ignore[operator]
    key = proxy.make_key("durable")
    completed: list[str] = []

    def worker() -> None:
        with httpx.Client(timeout=30) as http:
            for _ in range(200):
                try:
                    r = http.post(
                        f"{proxy.base_url}/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "smollm2", "messages": HELLO, "max_tokens": 2},
                    )
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    json.loads(r.content)  # received in full
                    completed.append(r.headers["x-request-id"])

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(worker) for _ in range(4)]
        deadline = time.monotonic() + 60  # a loaded machine may take a while for the first few
        while len(completed) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # then kill it mid-flight
        proxy.kill()
        for f in futures:
            f.result()
    assert len(completed) >= 5
    rows = {r[0] for r in proxy.query("SELECT request_id FROM token_usage_events WHERE status = 200")}
    missing = [rid for rid in completed if rid not in rows]
    assert not missing, f"{len(missing)} completed responses have no usage row"
    assert proxy.query("PRAGMA integrity_check") == [("ok",)]


def test_client_disconnect_mid_stream_is_billed_and_aborted(
    proxy: Proxy, openai_client: Callable[..., openai.OpenAI]
) -> None:
    key = proxy.make_key("leaver")
    body = json.dumps(
        {"model": "smollm2", "prompt": "1, 2, 3, 4,", "max_tokens": 400, "stream": True, "temperature": 0}
    )
    with httpx.Client(timeout=30) as http:
        with http.stream(
            "POST",
            f"{proxy.base_url}/completions",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        ) as r:
            request_id = r.headers["x-request-id"]
            events = 0
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events += 1
                if events >= 6:
                    break
    # The next request is served at once: the runtime stopped generating for the leaver.
    c = openai_client(proxy.base_url, key)
    t0 = time.monotonic()
    c.completions.create(model="smollm2", prompt="Hi", max_tokens=1)
    # Had the leaver's 400 tokens run on, this request would have waited for them (4 s and more).
    assert time.monotonic() - t0 < 3.0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = proxy.query(
            "SELECT status, client_disconnected, completion_tokens FROM token_usage_events WHERE request_id=?",
            (request_id,),
        )
        if rows:
            break
        time.sleep(0.05)
    assert rows, "the disconnected request has no usage row"
    status, disconnected, completion = rows[0]
    assert (status, disconnected) == (499, 1)
    assert 3 <= completion < 400  # type: ignore[operator]


def queued_count(proxy: Proxy) -> float:
    """How many generation requests the runtime has queued so far (the queue-position histogram's count)."""
    text = httpx.get(f"http://127.0.0.1:{proxy.port}/metrics", timeout=10).text
    match = re.search(r"^llmserver_runtime_queue_position_count (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def runtime_queue(daemon: Daemon) -> int:
    """Requests waiting in the daemon's queues (not counting the running ones)."""

    async def queued() -> int:
        async with RuntimeClient(daemon.endpoint, connect_wait=0.2) as client:
            return sum(m.queued for m in await client.models())

    return asyncio.run(queued())


def usage_rows(proxy: Proxy, request_id: str) -> list[tuple[object, ...]]:
    """Rows of a request, by the server's id (``x-request-id``) or the client's own (``X-Request-ID``)."""
    return proxy.query(
        "SELECT id, status, client_disconnected, completion_tokens, request_id "
        "FROM token_usage_events WHERE request_id = ? OR client_request_id = ?",
        (request_id, request_id),
    )


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "buffered"])
def test_client_disconnect_while_queued_is_billed_and_aborted(
    proxy: Proxy, shared_daemon: Daemon, stream: bool
) -> None:
    key = proxy.make_key("queued-leaver")
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    long_body = {"model": "smollm2", "prompt": "1, 2, 3, 4,", "max_tokens": 1500, "stream": True, "temperature": 0}
    request_id = f"queued-leaver-{'streamed' if stream else 'buffered'}"
    body = json.dumps(
        {"model": "smollm2", "prompt": "1, 2, 3, 4,", "max_tokens": 400, "stream": stream, "temperature": 0}
    ).encode()
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{proxy.base_url}/completions", json=long_body, headers=auth) as long_run:
            long_id = long_run.headers["x-request-id"]
            lines = long_run.iter_lines()  # kept: dropping the iterator would close the connection
            events = 0
            for line in lines:
                events += line.startswith("data: ")
                if events >= 3:  # the model is busy with it
                    break
            # The leaver's request waits in the runtime's queue behind the long one, with nothing written
            # to its client: the proxy can only notice the disconnect by looking at the connection.
            queued = queued_count(proxy)
            leaver = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
            leaver.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {key}\r\nX-Request-ID: {request_id}\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 10
            while queued_count(proxy) <= queued and time.monotonic() < deadline:
                time.sleep(0.05)
            assert runtime_queue(shared_daemon) == 1, "the leaver's request is not queued in the runtime"
            leaver.close()
            deadline = time.monotonic() + 10
            while not (rows := usage_rows(proxy, request_id)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert rows, "the request of the client that left while queued has no usage row"
            # Noticed while the long generation still runs (its row comes only when it ends) ...
            assert not usage_rows(proxy, long_id)
            # ... and dropped from the runtime's queue: its 400 tokens will not delay the next request.
            deadline = time.monotonic() + 5
            while runtime_queue(shared_daemon) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert runtime_queue(shared_daemon) == 0
            assert not usage_rows(proxy, long_id)
    leaver_row_id, status, disconnected, completion, server_id = rows[0]
    assert (status, disconnected, completion) == (499, 1, 0)
    deadline = time.monotonic() + 10
    while not (long_rows := usage_rows(proxy, long_id)):
        assert time.monotonic() < deadline, "the long request has no usage row"
        time.sleep(0.05)
    assert long_rows[0][0] > leaver_row_id  # type: ignore[operator]
    # A client that left is no server fault: logged as gone, not as an unhandled error with a traceback.
    log_lines = [line for line in proxy.log_path.read_text(errors="replace").splitlines() if str(server_id) in line]
    assert not [line for line in log_lines if "unhandled error" in line], log_lines


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "param"),
    [
        (b"{not json", "application/json", 400, None),
        (b"[1, 2]", "application/json", 400, None),
        (b'{"model": 5, "messages": []}', "application/json", 400, "model"),
        (b'{"model": "smollm2", "messages": "hi"}', "application/json", 400, "messages"),
        (
            b'{"model": "smollm2", "messages": [{"role": "wizard", "content": "x"}]}',
            "application/json",
            400,
            "messages[0].role",
        ),
        (
            b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            "application/json",
            400,
            "temperature",
        ),
        (
            b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": 99999999999}',
            "application/json",
            400,
            "max_tokens",
        ),
        (
            b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
            "application/json",
            400,
            "max_tokens",
        ),
        *(
            (
                b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "%s": %s}' % (field, value),
                "application/json",
                400,
                field.decode(),
            )
            for field, value in [
                (b"presence_penalty", b"2.5"),
                (b"presence_penalty", b"-3"),
                (b"frequency_penalty", b"-2.01"),
                (b"frequency_penalty", b'"high"'),
                (b"top_k", b"-1"),
                (b"top_k", b"1.5"),
                (b"top_k", b"true"),
                (b"min_p", b"1.5"),
                (b"min_p", b"-0.1"),
                (b"repeat_penalty", b"0"),
                (b"repeat_penalty", b"10.5"),
            ]
        ),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', "application/json", 404, "model"),
        (b'{"model": "smollm2", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "application/json", 400, None),
        (b"model=smollm2", "application/x-www-form-urlencoded", 415, None),  # a real form: asked for JSON
        (b"[1, 2]", "text/plain", 415, None),  # JSON, but no object: not sniffed as a request
        (
            b'{"model": "smollm2", "messages": [{"role": "user", "content": "' + b"x" * (2 << 20) + b'"}]}',
            "application/json",
            413,
            None,
        ),
    ],
)
def test_bad_bodies_get_an_envelope_and_harm_nothing(
    proxy: Proxy,
    body: bytes,
    content_type: str,
    status: int,
    param: str | None,
    openai_client: Callable[..., openai.OpenAI],
) -> None:
    key = proxy.make_key("bad-input")
    before = proxy.query("SELECT COUNT(*), SUM(tokens_used) FROM api_keys")
    r = httpx.post(
        f"{proxy.base_url}/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
        timeout=30,
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    assert proxy.query("SELECT COUNT(*), SUM(tokens_used) FROM api_keys") == before
    ok = openai_client(proxy.base_url, key).models.list()
    assert [m.id for m in ok] == ["smollm2"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_json_body_is_served_whatever_its_content_type(proxy: Proxy, content_type: str | None) -> None:
    """``curl -d '{...}'`` sends JSON as a form; OpenAI's API and llama.cpp's server take it, so do we."""
    key = proxy.make_key("curl-d")
    headers = {"Authorization": f"Bearer {key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    with httpx.Client(timeout=60) as http:
        chat = http.post(
            f"{proxy.base_url}/chat/completions",
            content=json.dumps({"model": "smollm2", "messages": HELLO, "max_tokens": 2}),
            headers=headers,
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["object"] == "chat.completion" and chat.json()["usage"]["completion_tokens"] > 0
        text = http.post(
            f"{proxy.base_url}/completions",
            content=json.dumps({"model": "smollm2", "prompt": "1, 2, 3,", "max_tokens": 2}),
            headers=headers,
        )
        assert text.status_code == 200, text.text
        assert text.json()["object"] == "text_completion"
        form = http.post(f"{proxy.base_url}/completions", content=b"model=smollm2&prompt=hi", headers=headers)
    if content_type is None:  # undeclared: taken for JSON, which it is not
        assert form.status_code == 400 and "not valid JSON" in form.json()["error"]["message"]
    else:
        assert form.status_code == 415
        assert "Content-Type: application/json" in form.json()["error"]["message"]
    for served in (chat, text):  # metered like any request
        rows = proxy.query(
            "SELECT status FROM token_usage_events WHERE request_id = ?", (served.headers["x-request-id"],)
        )
        assert rows == [(200,)]


def test_broken_http_is_refused_and_the_server_keeps_serving(
    proxy: Proxy, openai_client: Callable[..., openai.OpenAI]
) -> None:
    key = proxy.make_key("broken-http")
    for junk in (
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n\r\n",
    ):
        reply = raw_request(proxy.port, junk)
        assert reply == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", reply), reply[:200]
    unauth = httpx.get(f"{proxy.base_url}/models", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert unauth.status_code == 401 and unauth.json()["error"]["code"] == "missing_api_key"
    lost = httpx.get(f"http://127.0.0.1:{proxy.port}/nowhere")
    assert lost.status_code == 404 and "error" in lost.json()
    ok = openai_client(proxy.base_url, key).models.list()
    assert [m.id for m in ok] == ["smollm2"]
    assert proxy.query("PRAGMA integrity_check") == [("ok",)]


def test_health_readiness_and_metrics(
    proxy: Proxy, make_proxy: object, openai_client: Callable[..., openai.OpenAI]
) -> None:
    base = f"http://127.0.0.1:{proxy.port}"
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = proxy.wait_ready()
    assert ready == {"database": "ok", "runtime": "ok", "warmup": "ok", "ledger": "ok"}
    key = proxy.make_key("metrics")
    openai_client(proxy.base_url, key).chat.completions.create(model="smollm2", messages=HELLO, max_tokens=2)
    text = httpx.get(f"{base}/metrics").text
    assert 'llmserver_requests_total{endpoint="/v1/chat/completions",model="smollm2",status="200"}' in text
    assert 'llmserver_tokens_total{kind="prompt",model="smollm2"}' in text
    assert "llmserver_request_latency_seconds_bucket" in text
    assert "llmserver_runtime_queue_position_count" in text
    assert key not in text
    down: Proxy = make_proxy("ipc:///tmp/llmserver-nobody-here/rt.sock").start()  # type: ignore[operator]
    not_ready = httpx.get(f"http://127.0.0.1:{down.port}/readyz", timeout=10)
    assert not_ready.status_code == 503 and not_ready.json()["checks"]["database"] == "ok"
