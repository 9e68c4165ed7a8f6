"""Large answers written in pieces, and what a finished request holds let go (issue 18).

aiohttp writes a :class:`~aiohttp.web.Response`'s body in one ``transport.write``: what the client
has not taken yet is copied into the transport's buffer (Python 3.11 keeps a ``bytearray``), so a
slow reader of a large answer pinned the answer twice. :func:`send_in_pieces` (an
``on_response_prepare`` hook the guarded runner installs on every app it serves) swaps such a body
for a :class:`PiecewiseBody`, written :data:`PIECE` bytes at a time, each after the send buffer has
drained below its high-water mark: the transport holds at most about two pieces.

aiohttp's request loop also keeps the last request and its answer referenced while a kept-alive
connection waits for its next request: the request's cached body (``request.read()`` keeps it) and
the answer's body stayed in memory for as long as the client stayed connected (2.2 MB per slow
reader of a 900 KB request). :func:`release` drops them once the answer is finished.
"""

from __future__ import annotations

from aiohttp import payload, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest

PIECE = 64 * 1024  # the writer drains above 64 KiB (aiohttp's StreamWriter.write), as the guard's high-water mark


class PiecewiseBody(payload.Payload):
    """A response body sent :data:`PIECE` bytes at a time, each write waiting for the send buffer."""

    _value: memoryview

    def __init__(self, body: bytes | bytearray, content_type: str) -> None:
        super().__init__(memoryview(body), content_type=content_type)
        self._size = len(body)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        for start in range(0, len(self._value), PIECE):
            await writer.write(self._value[start : start + PIECE])


async def send_in_pieces(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: a large bytes body becomes a :class:`PiecewiseBody`."""
    if not isinstance(response, web.Response):
        return
    body = response.body
    if isinstance(body, (bytes, bytearray)) and len(body) > 2 * PIECE:
        response.body = PiecewiseBody(body, response.headers.get("Content-Type", "application/octet-stream"))


def release(request: BaseRequest, response: web.StreamResponse) -> None:
    """Drop the bodies a finished request and its answer hold (see the module docstring). aiohttp
    keeps the request's cached body and parsed form in private slots; its version is pinned."""
    request._read_bytes = None
    request._post = None
    if isinstance(response, web.Response):
        response.body = None
