"""Issue 14: connection limits, protocol-level rejections in the envelope, HEAD, deep JSON; a real proxy."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.harness import Daemon, Proxy, free_port, proxy_env


@pytest.fixture
def limited_proxy(shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A proxy with short header/body deadlines, so the tests wait seconds, not tens of them."""
    tmp = tmp_path_factory.mktemp("limited")
    port = free_port()
    env = proxy_env(tmp, shared_daemon.endpoint, port)
    env.update({"LLMSERVER_HEADER_TIMEOUT": "2", "LLMSERVER_BODY_TIMEOUT": "2"})
    proxy = Proxy(env, tmp / "app.db", port, tmp / "proxy.log").start()
    yield proxy
    proxy.kill()


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def read_all(sock: socket.socket, limit: float = 10.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def envelope(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body)


def test_a_connection_that_sends_nothing_gets_a_408_at_the_header_deadline(limited_proxy: Proxy) -> None:
    """Old code: closed only after 75 s."""
    with connect(limited_proxy) as sock:
        started = time.monotonic()
        status, body = envelope(read_all(sock))
    assert status == 408 and body["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert 1.5 < time.monotonic() - started < 4


def test_headers_dripped_byte_by_byte_meet_the_same_deadline(limited_proxy: Proxy) -> None:
    with connect(limited_proxy) as sock:
        started = time.monotonic()
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _ = envelope(read_all(sock))
    assert status == 408 and time.monotonic() - started < 4


def test_a_body_shorter_than_its_content_length_is_a_408(limited_proxy: Proxy) -> None:
    """Old code: a Content-Length larger than the body waited without limit."""
    key = limited_proxy.make_key()
    with connect(limited_proxy) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": '
        )
        started = time.monotonic()
        status, body = envelope(read_all(sock))
    assert status == 408 and body["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert time.monotonic() - started < 4


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRETKEY" + b"k" * 9000 + b"\r\n\r\n", 431),
        (b"G@T /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
    ],
    ids=["oversized-header", "bad-method", "te-and-cl"],
)
def test_protocol_level_rejections_are_in_the_envelope_and_echo_nothing(
    proxy: Proxy, request_bytes: bytes, status: int
) -> None:
    """Old code: plain text, and the oversized-header text quoted the API key."""
    with connect(proxy) as sock:
        sock.sendall(request_bytes)
        response = read_all(sock)
    got, body = envelope(response)
    assert got == status and set(body["error"]) == {"message", "type", "param", "code"}  # type: ignore[arg-type]
    assert b"SECRETKEY" not in response and b"kkkk" not in response


def test_head_without_a_key_answers_at_once(proxy: Proxy) -> None:
    """Old code: the client waited 5 s for a body that never came."""
    import http.client

    for path in ("/v1/models", "/v1/nowhere"):
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=3)
        try:
            started = time.monotonic()
            conn.request("HEAD", path)
            response = conn.getresponse()
            assert response.status in (401, 404)
            # What `curl -X HEAD` waits for: the length of a body that a HEAD answer never has.
            assert response.getheader("Content-Length") in (None, "0")
            assert time.monotonic() - started < 1
        finally:
            conn.close()


def test_json_nested_100000_deep_is_a_400(proxy: Proxy) -> None:
    """Old code: 500 (RecursionError)."""
    import urllib.error
    import urllib.request

    key = proxy.make_key()
    body = b'{"model": "smollm2", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    request = urllib.request.Request(
        f"{proxy.base_url}/chat/completions", data=body, headers={"Authorization": f"Bearer {key}"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"]["code"] == "body_too_deep"


def _open_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_1100_idle_connections_under_a_1024_file_limit_do_not_take_the_proxy_away(
    shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Old code: a good client timed out after 10 s, and every failed accept() logged a traceback."""
    tmp = tmp_path_factory.mktemp("nofile")
    port = free_port()
    proxy = Proxy(proxy_env(tmp, shared_daemon.endpoint, port), tmp / "app.db", port, tmp / "proxy.log")
    log = proxy.log_path.open("ab")
    proxy.proc = subprocess.Popen(
        [sys.executable, "-m", "llmserver.commands.proxy"],
        env=proxy.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_open_file_limit,
    )
    log.close()
    idle: list[socket.socket] = []
    try:
        _wait_healthy(proxy)
        key = proxy.make_key()
        for _ in range(1100):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        started = time.monotonic()
        with connect(proxy) as sock:
            sock.sendall(
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
                + key.encode()
                + b"\r\n\r\n"
            )
            response = read_all(sock, 5)
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert time.monotonic() - started < 2
    finally:
        for sock in idle:
            sock.close()
        proxy.kill()
    text = proxy.log_path.read_text()
    assert "Traceback" not in text
    assert 1 <= text.count("connection limit") <= 2, text[-2000:]
    assert key not in text


def _wait_healthy(proxy: Proxy) -> None:
    import urllib.request

    end = time.monotonic() + 30
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("proxy did not start:\n" + proxy.log_path.read_text())


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "smollm2", "messages": [{"role": "user", "content": "hi \\ud800"}], "max_tokens": 2}',
        b'{"model": "smollm2\\udfff", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}',
        b'{"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "user": "\\uD83D", "max_tokens": 2}',
    ],
)
def test_a_lone_surrogate_escape_anywhere_in_a_body_is_a_400(proxy: Proxy, body: bytes) -> None:
    """A lone ``\\ud800`` parses to a string no UTF-8 encoder takes: a 400 where the body is read,
    not a 500 from whichever encoder (the ledger, the tokenizer, the daemon's frame) meets it first."""
    import urllib.error
    import urllib.request

    key = proxy.make_key()
    request = urllib.request.Request(
        f"{proxy.base_url}/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert "surrogate" in json.loads(caught.value.read())["error"]["message"]
