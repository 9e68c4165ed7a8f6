"""Issue 18: no path holds a connection past the header and body deadlines (the console's login, the
console alone, transcription uploads, every route); the header deadline never cuts a request that is
being served; multipart text fields are bounded. A real proxy process with short deadlines."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness import ROOT, Daemon, Proxy, clean_env, free_port, proxy_env

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 3
HEADER_TIMEOUT_SERVED = 1  # the shortest allowed: a request served longer than this is not cut
SESSION_KEY = "ab" * 64
BOUNDARY = "llmsboundary"


@pytest.fixture(scope="module")
def short_proxy(shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """A proxy with the console mounted and short header and body deadlines."""
    tmp = tmp_path_factory.mktemp("slow-bodies")
    port = free_port()
    env = proxy_env(tmp, shared_daemon.endpoint, port)
    env.update(
        {
            "LLMSERVER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "LLMSERVER_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "LLMSERVER_SESSION_KEY": SESSION_KEY,
        }
    )
    proxy = Proxy(env, tmp / "app.db", port, tmp / "proxy.log").start()
    yield proxy
    proxy.kill()


def head(method: str, path: str, length: int, content_type: str, key: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def drip(port: int, request_head: bytes, piece: bytes, every: float, limit: float = 15.0) -> tuple[float, bytes]:
    """Send the head, then ``piece`` every ``every`` seconds until the server answers or closes (or
    ``limit`` passes); the seconds the server held the connection, and what it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head)
        started = time.monotonic()
        while time.monotonic() - started < limit:
            readable, _, _ = select.select([sock], [], [], every)
            if readable:
                break
            try:
                sock.sendall(piece)
            except OSError:
                break
        held = time.monotonic() - started
        return held, read_all(sock)


def read_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def multipart(fields: list[tuple[str, bytes]], file: bytes | None = None) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in fields
    ]
    if file is not None:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n".encode()
            + file
            + b"\r\n"
        )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(
    ("path", "content_type", "piece"),
    [
        ("/admin/login", "application/x-www-form-urlencoded", b"a"),
        ("/admin/login/totp", "application/x-www-form-urlencoded", b"a"),
        ("/v1/audio/transcriptions", f"multipart/form-data; boundary={BOUNDARY}", b"x" * 1024),
        ("/v1/chat/completions", "application/json", b" "),
    ],
    ids=["console-login", "console-totp", "transcription-upload", "chat"],
)
def test_a_dripped_body_is_cut_at_the_body_deadline(
    short_proxy: Proxy, path: str, content_type: str, piece: bytes
) -> None:
    """Old code: the console's login and a transcription upload were still open after 100 s (only the
    JSON routes had a body deadline); here the drip would run to the 15 s limit."""
    key = short_proxy.make_key("drip") if path.startswith("/v1/") else None
    first = multipart([("model", b"stt-demo")])[:-20] if "multipart" in content_type else b""
    request_head = head("POST", path, 10_000_000, content_type, key) + first
    held, response = drip(short_proxy.port, request_head, piece, 0.25)
    assert response.startswith(b"HTTP/1.1 408"), response[:300]
    assert BODY_TIMEOUT - 0.5 < held < BODY_TIMEOUT + 2.5, held


def test_the_console_alone_has_the_same_deadlines(tmp_path: Path) -> None:
    """``llmserver admin serve`` (the console without the proxy). Old code: aiohttp's own server, no
    header deadline (a silent connection was kept for 75 s) and no body deadline."""
    port = free_port()
    env = clean_env(tmp_path)
    env.update(
        {
            "LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
            "LLMSERVER_SESSION_KEY": SESSION_KEY,
            "LLMSERVER_ADMIN_BIND_ADDRESS": f"127.0.0.1:{port}",
            "LLMSERVER_MODEL_CONFIG_DIR": str(tmp_path / "config"),
            "LLMSERVER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "LLMSERVER_BODY_TIMEOUT": str(BODY_TIMEOUT),
        }
    )
    log = (tmp_path / "admin.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "llmserver.cli", "admin", "serve"], env=env, cwd=ROOT, stdout=log, stderr=log
    )
    log.close()
    try:
        _wait_listening(port, server)
        held, response = drip(
            port, head("POST", "/admin/login", 100_000, "application/x-www-form-urlencoded"), b"a", 0.25
        )
        assert response.startswith(b"HTTP/1.1 408"), response[:300]
        assert BODY_TIMEOUT - 0.5 < held < BODY_TIMEOUT + 2.5, held
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            silent = read_all(sock, 10)
        assert silent.startswith(b"HTTP/1.1 408"), silent[:300]
        assert time.monotonic() - started < HEADER_TIMEOUT + 2
    finally:
        server.terminate()
        server.wait(15)


def _wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        assert server.poll() is None, "the console exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the console did not start")


def _post(proxy: Proxy, key: str, body: bytes) -> tuple[int, dict[str, object]]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/v1/audio/transcriptions",
            body=body,
            headers={"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_multipart_text_fields_are_bounded_in_number_and_size(short_proxy: Proxy) -> None:
    """Old code: 1,400 fields of 64 KB (90 MB of text) were read into memory for one request."""
    key = short_proxy.make_key("fields")
    status, body = _post(short_proxy, key, multipart([(f"f{i}", b"x") for i in range(200)], b"RIFF"))
    assert status == 400 and body["error"]["code"] == "too_many_fields", body  # type: ignore[index]
    status, body = _post(short_proxy, key, multipart([(f"f{i}", b"x" * 60_000) for i in range(10)], b"RIFF"))
    assert status == 413 and body["error"]["code"] == "fields_too_large", body  # type: ignore[index]
    status, body = _post(short_proxy, key, multipart([("prompt", b"x" * 100_000)], b"RIFF"))
    assert status == 413 and body["error"]["param"] == "prompt", body  # type: ignore[index]
    [(rows,)] = short_proxy.query("SELECT count(*) FROM token_usage_events")
    assert rows == 0


def _stream_with_a_padded_body(port: int, key: str) -> tuple[bytes, bytes]:
    """A streamed chat whose body (600 KB of JSON whitespace, no extra tokens) the server reads in
    several reads, then, on the same connection after the header deadline, a small request: both raw
    answers."""
    body = (
        b'{"model": "smollm2", "stream": true, "max_tokens": 2,'
        + b" " * 600_000
        + b'"messages": [{"role": "user", "content": "Count from 1 to 50."}]}'
    )
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:  # ten requests queue on one model
        sock.sendall(head("POST", "/v1/chat/completions", len(body), "application/json", key) + body)
        streamed = b""
        while not streamed.endswith(b"\r\n0\r\n\r\n") and (chunk := sock.recv(65536)):
            streamed += chunk
        time.sleep(HEADER_TIMEOUT_SERVED + 0.5)  # idle, kept alive: no deadline runs
        sock.sendall(f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
        return streamed, sock.recv(65536)


@pytest.mark.timeout(300)
def test_the_header_deadline_never_cuts_a_request_being_served(shared_daemon: Daemon, make_proxy: object) -> None:
    """Old code: a body that arrived in more than one read started the header deadline again while
    its request ran, and at the deadline a raw 408 was written into the middle of the SSE stream (5 of
    10 requests with 1 MB bodies)."""
    timeout = str(HEADER_TIMEOUT_SERVED)
    proxy: Proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_HEADER_TIMEOUT=timeout).start()  # type: ignore[operator]
    key = proxy.make_key()
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: _stream_with_a_padded_body(proxy.port, key), range(10)))
    late = [(a, b) for a, b in answers if b"not received in time" in a + b]
    assert not late, [(a[-200:], b[:200]) for a, b in late]
    assert all(a.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in a for a, _ in answers)
    assert all(b.startswith(b"HTTP/1.1 200") for _, b in answers)
