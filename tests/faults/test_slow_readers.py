"""50 clients (20 outside `make soak`) reading their streams at 1 byte a second: all served, and the
proxy's memory stays bounded; connections that stay after a large request hold none of it."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.faults.clients import SOAK, rss_bytes, scaled, stream_chat
from tests.harness import Daemon, Proxy

CLIENTS = 50 if SOAK else 20


@pytest.mark.timeout(300)  # 50 generations queue on one model, on a shared machine
def test_fifty_clients_reading_at_one_byte_a_second(shared_daemon: Daemon, make_proxy: object) -> None:
    proxy: Proxy = make_proxy(shared_daemon.endpoint).start()  # type: ignore[operator]
    key = proxy.make_key()
    assert proxy.proc is not None
    assert stream_chat(proxy.base_url, key, max_tokens=2).done  # loads the tokenizer: not per connection
    before = rss_bytes(proxy.proc.pid)
    body = json.dumps(
        {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": True}
    ).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    socks = []
    for _ in range(CLIENTS):
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.sendall(request)
        socks.append(sock)
    got = [b""] * CLIENTS
    peak = before
    end = time.monotonic() + scaled(12, 30)
    try:
        while time.monotonic() < end:
            for i, sock in enumerate(socks):
                got[i] += sock.recv(1)  # one byte per client per second
            peak = max(peak, rss_bytes(proxy.proc.pid))
            time.sleep(max(0.0, 1 - 0.001 * CLIENTS))
        assert all(g.startswith(b"HTTP/1.1 200") for g in got), [
            g[:20] for g in got if not g.startswith(b"HTTP/1.1 200")
        ]
        assert peak - before < 32 * 1024 * 1024, f"proxy memory grew {(peak - before) >> 20} MB"
        # Each connection is still being served, slowly: read the rest at full speed now.
        for i, sock in enumerate(socks):
            sock.settimeout(120)
            while chunk := sock.recv(65536):
                got[i] += chunk
        assert all(b"data: [DONE]" in g for g in got)
    finally:
        for sock in socks:
            sock.close()
    [(rows,)] = proxy.query("SELECT count(*) FROM token_usage_events WHERE status = 200")
    assert rows == CLIENTS + 1  # and the warm-up request
    print(
        f"FAULT slow-readers: {CLIENTS} clients at 1 B/s, all served, proxy RSS {before >> 20} -> peak {peak >> 20} MB"
    )


def _exchange(port: int, request: bytes) -> tuple[socket.socket, bytes]:
    """Send ``request``, read its whole answer (by its Content-Length), keep the connection open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return sock, head


@pytest.mark.timeout(300)
def test_connections_kept_after_large_requests_hold_none_of_them(shared_daemon: Daemon, make_proxy: object) -> None:
    """Issue 18: aiohttp's request loop kept each connection's last request (its 900 KB body, cached
    by ``request.read()``) and its answer for as long as the client stayed: 0.86 MB of RSS per
    connection here, 2.2 MB with a prompt that was counted."""
    proxy: Proxy = make_proxy(shared_daemon.endpoint).start()  # type: ignore[operator]
    key = proxy.make_key()
    assert proxy.proc is not None
    body = b'{"model": "smollm2", "max_tokens": 1,' + b" " * 900_000 + b'"prompt": "Hi"}'  # JSON whitespace: no tokens
    request = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    _exchange(proxy.port, request)[0].close()  # the first request's one-time costs
    before = rss_bytes(proxy.proc.pid)
    kept = [_exchange(proxy.port, request) for _ in range(CLIENTS)]
    try:
        assert all(head.startswith(b"HTTP/1.1 200") for _, head in kept)
        time.sleep(1)
        per_connection = (rss_bytes(proxy.proc.pid) - before) / CLIENTS
    finally:
        for sock, _ in kept:
            sock.close()
    assert per_connection < 200 * 1024, f"{per_connection / 1e6:.2f} MB per connection"
    print(f"FAULT kept connections: {CLIENTS} after 900 KB requests, {per_connection / 1e3:.0f} KB of RSS each")
