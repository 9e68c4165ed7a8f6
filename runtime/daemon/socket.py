"""The daemon's ROUTER socket, shared by the main thread and the model workers.

A worker sends its request's text and end frame to the client itself, under a
lock, instead of handing them to the main thread first: on a two-core board
every extra thread woken per token is time taken from llama.cpp, and the hop
cost a tenth of a millisecond per frame.

ZeroMQ sockets may be used from several threads one at a time (a mutex is the
full memory barrier the guide asks for). The main thread waits on the socket's
``ZMQ_FD`` and on a wake-up pipe rather than in ``zmq_poll`` (which would touch
the socket without the lock). ``ZMQ_FD`` is edge-triggered and any operation can
consume its signal, so whoever operated on the socket last checks ``ZMQ_EVENTS``:
a worker that sees a request waiting after its send writes to the pipe.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, cast

import zmq

from runtime.api.protocol import PROTOCOL_VERSION, Reply, encode_reply
from runtime.api.transport import readable

log = logging.getLogger(__name__)


class SharedRouter:
    """Made on the main thread, which alone may ``wait`` and ``recv``; any thread may ``send``."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._main = threading.get_ident()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closed = False
        self._poller = zmq.Poller()
        self._poller.register(cast(int, sock.get(zmq.FD)), zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)

    def wait(self, timeout_ms: int) -> None:
        """Until the socket may have a request, a worker wakes us, or ``timeout_ms`` passes.

        Callers ``recv`` afterwards whatever woke them: a signal consumed by another thread's
        send is caught within one timeout at worst (the workers' wake-ups make that rare).
        """
        if any(fd == self._wake_r for fd, _ in self._poller.poll(timeout_ms)):
            self._clear_wake()

    def send(self, identity: bytes, *frames: bytes) -> bool:
        """Send frames to one client as one message; False when the client is gone."""
        with self._lock:
            if self._closed:
                return False
            try:
                self._sock.send_multipart([identity, *frames], zmq.NOBLOCK)
                return True
            except zmq.ZMQError as exc:
                if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                    raise
                return False
            finally:
                if threading.get_ident() != self._main and self._readable():
                    self._wake()

    def recv(self) -> list[bytes] | None:
        """The next request message, or None when there is none (main thread only)."""
        with self._lock:
            if self._closed or not self._readable():
                return None
            return self._sock.recv_multipart(zmq.NOBLOCK)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    def _clear_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _readable(self) -> bool:
        return readable(self._sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._sock.close(0)
        os.close(self._wake_r)
        os.close(self._wake_w)


class RouterOutbox:
    """The workers' outbox: frames go straight to the client through the shared ROUTER.

    ``on_end(rid)`` runs when a request's last frame is out; ``on_gone(identity)`` when a
    client is found gone (its other work is aborted).
    """

    def __init__(self, router: SharedRouter, on_end: Callable[[str], None], on_gone: Callable[[bytes], None]) -> None:
        self._router, self._on_end, self._on_gone = router, on_end, on_gone

    def delta(self, identity: bytes, rid: str, text: str) -> None:
        self._send(identity, delta_frame(rid, text))

    def end(self, identity: bytes, rid: str, kind: str, body: dict[str, Any], text: str = "") -> None:
        frame = encode_reply(Reply(rid, kind, body))
        self._on_end(rid)
        if text:
            self._send(identity, delta_frame(rid, text), frame)
        else:
            self._send(identity, frame)

    def reply(self, identity: bytes, rid: str, kind: str, body: dict[str, Any]) -> None:
        self._send(identity, encode_reply(Reply(rid, kind, body)))

    def _send(self, identity: bytes, *frames: bytes) -> None:
        if not self._router.send(identity, *frames):
            self._on_gone(identity)


def delta_frame(rid: str, text: str) -> bytes:
    return b'{"v":%d,"id":%s,"type":"delta","text":%s}' % (
        PROTOCOL_VERSION,
        json.dumps(rid).encode(),
        json.dumps(text).encode(),
    )
