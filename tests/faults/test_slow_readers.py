"""50 clients (20 outside `make soak`) reading their streams at 1 byte a second: all served, and the
proxy's memory stays bounded."""

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
