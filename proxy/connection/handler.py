"""Connection limits of the proxy's HTTP server, which aiohttp does not enforce on its own.

aiohttp's server has no header-read timeout, keeps a connection that sends nothing for its
keep-alive time, accepts connections until ``accept()`` fails with EMFILE (logging a traceback
each time, and leaving no descriptor for the database or the runtime), answers protocol-level
rejections (oversized headers, a bad method, ``Transfer-Encoding`` with ``Content-Length``) in plain
text that may quote the offending header, and lets a connection whose client does not read hold its
unsent answer for ever. :class:`GuardedHandler` (a :class:`~aiohttp.web_protocol.RequestHandler`)
adds, per connection:

- a header deadline: a complete request line and headers within ``header_timeout`` of the
  connection (or of the first byte of a later request on a kept-alive connection), else a 408 and
  the connection is closed. It covers headers only: never a request that is being received or served;
- a body deadline: the whole body within ``body_timeout`` of its headers, on every route (JSON,
  the console's forms, multipart uploads), else the read raises :class:`BodyTimeoutError` (a 408)
  and the connection closes after that answer;
- a write deadline: when the send buffer is over its high-water mark (64 KiB) the writer waits
  (aiohttp's ``drain``), so at most that much unsent data sits in the process per connection; if the
  client reads nothing of it for ``write_timeout`` seconds the connection is aborted. A client that
  reads slowly but reads is served;
- a bound on open connections per process (:class:`ConnectionGuard`), below the open-file limit:
  when full, the connection that has waited longest for its client's headers or body is closed to
  make room (or the new one, if every connection is being served), with one warning a minute;
- rejections in the OpenAI error envelope, never echoing the request.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import socket
import sys
import termios
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from proxy.connection.limits import RateLimitedWarning
from proxy.connection.rejection import protocol_error, raw_response
from proxy.errors import ApiError
from proxy.middleware import SERVER
from proxy.piecewise import release, send_in_pieces

log = logging.getLogger(__name__)

WRITE_HIGH_WATER = 64 * 1024


class BodyTimeoutError(web.HTTPRequestTimeout):
    """Raised by a body read (any route: JSON, forms, multipart) once the request's body deadline
    passed; a 408 through the proxy's error middleware (or the console's error page)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(text=f"the request body was not received within {seconds:g} s")


@dataclass
class Deadlines:
    """Connections in one phase of a request (waiting for its headers, or for the rest of its body),
    oldest first, with their deadlines. One timer for all of them, set for the oldest deadline (a
    timer per request cost every request a heap push and a cancel); ``expire`` is called on each
    connection whose deadline passed."""

    seconds: float
    expire: Callable[[GuardedHandler], None]
    pending: OrderedDict[GuardedHandler, float] = field(default_factory=OrderedDict)
    _timer: asyncio.TimerHandle | None = None

    def __contains__(self, handler: GuardedHandler) -> bool:
        return handler in self.pending

    def start(self, handler: GuardedHandler) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        self.pending.pop(handler, None)
        self.pending[handler] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._sweep)

    def stop(self, handler: GuardedHandler) -> None:
        self.pending.pop(handler, None)

    def first(self) -> tuple[float, GuardedHandler] | None:
        """The connection that entered this phase first, and when."""
        for handler, deadline in self.pending.items():
            return deadline - self.seconds, handler
        return None

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.pending:
            handler, deadline = next(iter(self.pending.items()))
            if deadline > now:
                self._timer = loop.call_at(deadline, self._sweep)
                return
            del self.pending[handler]
            self.expire(handler)


@dataclass
class ConnectionGuard:
    """Open connections of one server, and which of them are waiting for their headers or their body."""

    limit: int
    header_timeout: float
    write_timeout: float
    body_timeout: float = 30.0
    open: int = 0
    headers: Deadlines = field(init=False)
    bodies: Deadlines = field(init=False)
    warn_full: RateLimitedWarning = field(
        default_factory=lambda: RateLimitedWarning("connection limit (%d) reached: closing excess connections")
    )

    def __post_init__(self) -> None:
        self.headers = Deadlines(self.header_timeout, GuardedHandler.headers_late)
        self.bodies = Deadlines(self.body_timeout, GuardedHandler.body_late)

    def admit(self, handler: GuardedHandler) -> bool:
        """Count ``handler`` in; False when it must be closed at once (every slot busy). When full, the
        connection that has waited longest for its client (for its headers or for its body) makes
        room: a client that sends slowly never holds a slot that a new client needs (issue 18). The
        newest connection is never the one closed while an older one waits, so a flood that
        reconnects as fast as it is closed only closes its own connections."""
        if self.open >= self.limit:
            self.warn_full(self.limit)
            waiting = [first for first in (self.headers.first(), self.bodies.first()) if first is not None]
            if not waiting:
                return False
            min(waiting, key=lambda first: first[0])[1].drop()
        self.open += 1
        return True


class GuardedHandler(RequestHandler):
    """aiohttp's request handler with the limits described in the module docstring.

    Which bytes are headers is decided from the request being received, not from aiohttp's task
    state (that left a window between a request's parsing and its handler's start in which the rest
    of its body counted as a new request's headers, issue 18): data that arrives while no request's
    body is incomplete starts a request; a parsed request whose body has not all arrived is in the
    body phase until it has."""

    guard: ConnectionGuard

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self._counted = False
        self._write_timer: asyncio.TimerHandle | None = None
        self._unsent_at_pause = 0
        self._body: StreamReader | None = None  # the payload still arriving, if any
        self._in_flight = 0  # requests parsed whose answer is not finished

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.guard.admit(self):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._counted = True
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)  # type: ignore[attr-defined]
        self.guard.headers.start(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._leave_phases(ConnectionResetError("the connection was lost"))
        if self._write_timer is not None:
            self._write_timer.cancel()
        if self._counted:
            self._counted = False
            self.guard.open -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._body is None and self not in self.guard.headers:
            self.guard.headers.start(self)  # these bytes begin a request (a later one, when kept alive)
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self.guard.headers.stop(self)
            self._in_flight += self._request_count - before
            self._body = self._messages[-1][1] if self._messages else None
            if self._body is not None and not self._body.is_eof():
                self.guard.bodies.start(self)
        if self._body is not None and self._body.is_eof():
            self._body = None
            self.guard.bodies.stop(self)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._in_flight -= 1
            release(request, resp)  # not kept while the connection waits for its next request

    def drop(self) -> None:
        """Close this connection now (it sends its headers or its body too slowly to keep its slot)."""
        self._leave_phases(ConnectionResetError("the connection was closed to make room for another"))
        if self.transport is not None:
            self.transport.abort()

    def _leave_phases(self, reason: BaseException) -> None:
        self.guard.headers.stop(self)
        self.guard.bodies.stop(self)
        if self._in_flight and self._body is not None and not self._body.is_eof():
            # A handler reading the body wakes up, whatever aiohttp does. (Not once the answer is
            # finished: aiohttp's own read of the rest would log the error as unhandled.)
            self._body.set_exception(reason)

    # -- header and body deadlines ---------------------------------------------------------------

    def headers_late(self) -> None:
        """The header deadline passed: a 408, and the connection closed. Late headers of a request
        pipelined behind one being answered: the connection closes after that answer (nothing can be
        written in the middle of it)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._in_flight:
            self.close()
            return
        error = ApiError(408, "the request headers were not received in time", code="request_timeout")
        transport.write(raw_response(error))
        transport.close()

    def body_late(self) -> None:
        """The body deadline passed: the handler reading the body gets a 408 (:class:`BodyTimeoutError`)
        and the connection closes after its answer; if the answer was already sent (aiohttp reads and
        drops the rest of a body for a second), it closes now."""
        payload = self._body
        if payload is None or payload.is_eof():
            return
        if not self._in_flight:
            self.force_close()
            return
        self._lingering_time = 0.0  # aiohttp's wait for the rest of the body after the answer: none
        payload.set_exception(BodyTimeoutError(self.guard.body_timeout))

    # -- write deadline --------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._unsent_at_pause = self._unsent()
        self._write_timer = self._loop.call_later(self.guard.write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def _unsent(self) -> int:
        """Bytes not yet taken by the client: the transport's buffer plus the socket's send queue
        (the kernel's buffer holds megabytes, so the first alone shows no progress for a while)."""
        transport = self.transport
        if not isinstance(transport, asyncio.WriteTransport):
            return 0
        return transport.get_write_buffer_size() + _send_queue(transport.get_extra_info("socket"))

    def _write_stalled(self) -> None:
        unsent = self._unsent()
        if 0 < unsent < self._unsent_at_pause:  # the client read some: give it another period
            self._unsent_at_pause = unsent
            self._write_timer = self._loop.call_later(self.guard.write_timeout, self._write_stalled)
            return
        self._write_timer = None
        log.info("closed a connection whose client read nothing for %.0f s", self.guard.write_timeout)
        if self.transport is not None:
            self.transport.abort()

    # -- protocol-level rejections -----------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The envelope for what aiohttp rejects before any handler runs; never the request's text."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started; no error response can follow")
        log.debug("rejected a malformed HTTP request (%d, %s)", status, type(exc).__name__ if exc else "-")
        error = protocol_error(status, exc)
        response = web.Response(status=error.status, body=error.body(), content_type="application/json")
        response.headers["Server"] = SERVER
        response.force_close()
        return response


def _send_queue(sock: socket.socket | None) -> int:
    """Bytes in the kernel's send queue of ``sock`` (Linux ``SIOCOUTQ``); 0 where unknown."""
    if sock is None or not hasattr(termios, "TIOCOUTQ"):
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"), sys.byteorder)
    except OSError:
        return 0


class GuardedServer(web.Server):
    """aiohttp's low-level server making :class:`GuardedHandler` connections."""

    guard: ConnectionGuard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, self.guard, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose server is a :class:`GuardedServer` (same app, same handler options)."""

    def __init__(self, app: web.Application, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard
        app.on_response_prepare.append(send_in_pieces)  # large answers in pieces (proxy.piecewise)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds the Server inside Application._make_handler; re-class that instance
        # rather than copy its private construction (GuardedServer adds no state of its own).
        server.__class__ = GuardedServer
        server.guard = self._guard  # type: ignore[attr-defined]
        return server
