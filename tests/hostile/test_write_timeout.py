"""Issue 14: a client that does not read cannot pin its unsent answer; one that reads slowly is served."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp import web

from proxy.connection.handler import ConnectionGuard, GuardedAppRunner
from proxy.piecewise import PIECE
from tests.harness import free_port

BODY = 8 * 1024 * 1024


async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * BODY)


async def serve(guard: ConnectionGuard) -> tuple[GuardedAppRunner, int]:
    app = web.Application()
    app.router.add_get("/big", big)
    runner = GuardedAppRunner(app, guard)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def client(port: int, rcvbuf: int = 4096) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    return sock


@pytest.mark.asyncio
async def test_a_client_that_reads_nothing_is_dropped_at_the_write_deadline() -> None:
    """Old code: no write timeout; the answer stayed in memory for as long as the client stayed."""
    guard = ConnectionGuard(limit=100, header_timeout=10, write_timeout=1.0)
    runner, port = await serve(guard)
    sock = await asyncio.to_thread(client, port)
    try:
        end = time.monotonic() + 6
        while guard.open and time.monotonic() < end:
            await asyncio.sleep(0.1)
        assert guard.open == 0, "the stalled connection is still open"
    finally:
        sock.close()
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_client_that_reads_slowly_is_served_to_the_end() -> None:
    # 5 s: on a shared machine the reading thread itself may not run for a second or two.
    guard = ConnectionGuard(limit=100, header_timeout=10, write_timeout=5.0)
    runner, port = await serve(guard)

    def read_slowly() -> int:
        sock = client(port, 64 * 1024)
        got = 0
        with sock:
            while True:
                chunk = sock.recv(64 * 1024)
                if not chunk:
                    return got
                got += len(chunk)
                if got >= BODY:
                    return got
                time.sleep(0.02)  # about 3 MB/s at most: far slower than the server writes

    try:
        got = await asyncio.to_thread(read_slowly)
        assert got >= BODY
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_a_large_answer_is_written_in_pieces() -> None:
    """Issue 18: the body went to the transport in one write, so what the kernel did not take (here
    megabytes) sat in the transport's buffer beside the answer itself, for as long as the client read."""
    guard = ConnectionGuard(limit=100, header_timeout=10, write_timeout=30.0)
    runner, port = await serve(guard)
    sock = await asyncio.to_thread(client, port)
    try:
        await asyncio.sleep(1.0)
        assert runner.server is not None
        [handler] = runner.server.connections
        assert isinstance(handler.transport, asyncio.WriteTransport)
        held = handler.transport.get_write_buffer_size()
        assert held <= 4 * PIECE, f"{held} bytes in the transport's buffer"
    finally:
        sock.close()
        await runner.cleanup()
