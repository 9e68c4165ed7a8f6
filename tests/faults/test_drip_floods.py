"""Issue 18: floods of slow bodies at a low open-file limit, through a real proxy process.

Hundreds of clients each open a connection, send a request's headers and then drip its body (a
console login without credentials, or a transcription upload), and open another as soon as one is
closed. No connection is held past the header and body deadlines, and a good client (a fresh
connection per request to ``/v1/models``) is served throughout. ``make soak``: 900 clients for
100 s at 1024 open files with the default deadlines; ``make test``: 400 clients for 15 s at 512
open files with deadlines of 2 and 3 s. The figures are printed for the release note.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.faults.clients import SOAK, scaled
from tests.harness import ROOT, Daemon, Proxy, free_port, proxy_env

NOFILE = 1024 if SOAK else 512
CLIENTS = 900 if SOAK else 400
SECONDS = scaled(15, 100)
HEADER_TIMEOUT = 20 if SOAK else 2
BODY_TIMEOUT = 30 if SOAK else 3
DRIP_EVERY = scaled(0.5, 2.0)
BOUNDARY = "floodboundary"


@dataclass
class Flood:
    """What the flood's clients and the good client saw."""

    held: list[float] = field(default_factory=list)  # seconds the proxy held each client connection
    connections: int = 0  # connections the flood's clients opened
    answered: dict[int, int] = field(default_factory=dict)  # status the server answered a drip with
    good: list[float] = field(default_factory=list)  # latency of each good request that succeeded
    good_failed: list[str] = field(default_factory=list)  # why each failed request failed
    peak_sockets: int = 0


def _open_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture
def limited_proxy(shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The proxy, console mounted, under an open-file limit of :data:`NOFILE`."""
    tmp = tmp_path_factory.mktemp("flood")
    port = free_port()
    env = proxy_env(tmp, shared_daemon.endpoint, port)
    env.update(
        {
            "LLMSERVER_SESSION_KEY": "cd" * 64,
            "LLMSERVER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "LLMSERVER_BODY_TIMEOUT": str(BODY_TIMEOUT),
        }
    )
    proxy = Proxy(env, tmp / "app.db", port, tmp / "proxy.log")
    log = proxy.log_path.open("ab")
    proxy.proc = subprocess.Popen(
        [sys.executable, "-m", "llmserver.commands.proxy"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_open_file_limit,
    )
    log.close()
    proxy.wait_ready()
    yield proxy
    proxy.kill()


async def _drip(port: int, head: bytes, piece: bytes, end: float, flood: Flood) -> None:
    """One flooding client: a connection at a time, headers then a body dripped until closed."""
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            writer.write(head)
            while time.monotonic() < end:
                try:
                    data = await asyncio.wait_for(reader.read(65536), DRIP_EVERY)
                except asyncio.TimeoutError:
                    writer.write(piece)
                    await writer.drain()
                    continue
                if data.startswith(b"HTTP/1.1 "):
                    status = int(data.split(b" ", 2)[1])
                    flood.answered[status] = flood.answered.get(status, 0) + 1
                break
        except OSError:
            pass
        finally:
            flood.connections += 1
            writer.close()


def _good_client(port: int, key: str, end: float, flood: Flood) -> None:
    """A fresh connection per request, in its own thread (the flood's loop does not delay it)."""
    request = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\r\n"
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request.encode())
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            failure = None if data.startswith(b"HTTP/1.1 200") else data[:40].decode(errors="replace")
        except OSError as exc:
            failure = type(exc).__name__
        if failure is None:
            flood.good.append(time.monotonic() - started)
        else:
            flood.good_failed.append(failure)
        time.sleep(0.1)


def _sockets(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(target)
    return found


async def _watch_sockets(pid: int, end: float, flood: Flood) -> None:
    """The proxy's own view: how many sockets it holds, and how long each client's stays open (a
    socket first seen after the flood began; sampled twice a second). The clients cannot tell: a
    connection their kernel completed may wait in a full accept queue the proxy never took it from."""
    before = _sockets(pid)
    first_seen: dict[str, float] = {}
    last_seen: dict[str, float] = {}
    while time.monotonic() < end:
        now = time.monotonic()
        current = _sockets(pid) - before
        flood.peak_sockets = max(flood.peak_sockets, len(current))
        for name in current:
            first_seen.setdefault(name, now)
            last_seen[name] = now
        await asyncio.sleep(0.5)
    flood.held = [last_seen[name] - first_seen[name] for name in first_seen] or [0.0]


async def _flood(proxy: Proxy, key: str, head: bytes, piece: bytes) -> Flood:
    assert proxy.proc is not None
    flood = Flood()
    end = time.monotonic() + SECONDS
    drips = [_drip(proxy.port, head, piece, end, flood) for _ in range(CLIENTS)]
    good = asyncio.to_thread(_good_client, proxy.port, key, end, flood)
    await asyncio.gather(good, _watch_sockets(proxy.proc.pid, end, flood), *drips)
    return flood


def _report(name: str, flood: Flood) -> None:
    good = sorted(flood.good)
    total = len(good) + len(flood.good_failed)
    print(
        f"FAULT {name}-drip flood: {CLIENTS} clients for {SECONDS:g} s at {NOFILE} open files "
        f"(deadlines {HEADER_TIMEOUT}+{BODY_TIMEOUT} s): {flood.connections} connections, the proxy held one at most "
        f"{max(flood.held):.1f} s (median {statistics.median(flood.held):.1f} s), answers {flood.answered}, "
        f"proxy sockets at peak {flood.peak_sockets}; good client {len(good)}/{total} served, latency median "
        f"{statistics.median(good) * 1000:.0f} ms, max {good[-1] * 1000:.0f} ms"
    )


def _check(proxy: Proxy, flood: Flood, answers: set[int]) -> None:
    # One deadline for the headers (sent at once here), one for the body, and a margin for a busy machine.
    assert max(flood.held) < HEADER_TIMEOUT + BODY_TIMEOUT + scaled(5, 10), sorted(flood.held)[-10:]
    assert not set(flood.answered) - answers, flood.answered  # else cut at a deadline or closed to make room
    total = len(flood.good) + len(flood.good_failed)
    # A burst of new connections may close the good client's before the proxy has read its request.
    assert len(flood.good_failed) <= total * 0.1, f"the good client failed {flood.good_failed} of {total} times"
    assert statistics.median(flood.good) < 5.0  # a 2-core machine running the flood's clients too
    assert "Traceback" not in proxy.log_path.read_text()


@pytest.mark.timeout(600)
def test_a_flood_of_dripped_console_logins(limited_proxy: Proxy) -> None:
    """Old code: 900 logins at 1024 open files held every slot for the whole 100 s and every other
    client was reset (here: the good client failed, connections held to the end of the flood)."""
    key = limited_proxy.make_key("good")
    head = (
        b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100000\r\n\r\nusername="
    )
    flood = asyncio.run(_flood(limited_proxy, key, head, b"a"))
    _report("login", flood)
    _check(limited_proxy, flood, {408})


@pytest.mark.timeout(600)
def test_a_flood_of_dripped_transcription_uploads(limited_proxy: Proxy) -> None:
    """Old code: an upload dripping 1 KB every 2 s was still open after 100 s; here, every upload
    beyond the open-file limit was a 500 with a traceback (EMFILE). Uploads beyond the ones being
    written to disk are a 503 with ``retry-after``."""
    key = limited_proxy.make_key("good")
    drip_key = limited_proxy.make_key("flood")
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {drip_key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 10000000\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    flood = asyncio.run(_flood(limited_proxy, key, head, b"\0" * 1024))
    _report("upload", flood)
    _check(limited_proxy, flood, {408, 503})
