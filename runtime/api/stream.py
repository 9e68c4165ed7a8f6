"""Streamed requests to the runtime daemon, read as ``async for piece in stream``.

:class:`ReplyStream` is what every streamed op shares: a request opened on the client's channel,
the daemon's ``accepted`` (its queue position), pieces, then ``done`` or an error; leaving early
aborts the work on the daemon. :class:`GenerateStream` reads text pieces (``delta``);
``runtime.api.speech.SpeechStream`` reads audio (``audio``). The stream talks to its client only
through :class:`Channel`, the three calls the client offers for it: open a request (its inbox
registered before the request is sent), release it, abort it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from runtime.api.errors import RuntimeRequestError
from runtime.api.inbox import Inbox, as_error
from runtime.api.protocol import Done, Reply, Request, done_from_body

Piece = TypeVar("Piece")
Stream = TypeVar("Stream", bound="ReplyStream[Any]")


class Channel(Protocol):
    """What a stream needs of the client that made it."""

    async def open(self, req: Request) -> Inbox:
        """Register an inbox for ``req`` and send it; on failure the inbox is released and it raises."""
        ...

    def release(self, rid: str) -> None:
        """Forget the request ``rid``: replies still arriving for it are dropped."""
        ...

    async def abort(self, rid: str) -> None:
        """Ask the daemon to stop the request ``rid`` (queued or running)."""
        ...


class ReplyStream(ABC, Generic[Piece]):
    """One streamed request: ``async for piece in stream``; then its ``done`` reply's body.

    Leaving ``async with`` (or calling ``aclose``) before the end aborts the work on the daemon; so
    does cancelling the task that iterates. A subclass names its pieces' reply type (``PIECE``) and
    reads them (:meth:`_piece`) and the ``done`` body (:meth:`_done`).
    """

    PIECE = ""

    def __init__(self, channel: Channel, req: Request) -> None:
        self._channel, self._req = channel, req
        self._inbox: Inbox | None = None
        self._started = False
        self._finished = False
        self._peeked: list[Reply] = []
        self.position: int | None = None
        self.error: RuntimeRequestError | None = None

    @abstractmethod
    def _piece(self, body: dict[str, Any]) -> Piece:
        """One piece from its reply's body."""

    @abstractmethod
    def _done(self, body: dict[str, Any]) -> None:
        """Keep what the ``done`` reply says (its figures)."""

    @property
    def id(self) -> str:
        return self._req.id

    async def __aenter__(self: Stream) -> Stream:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        try:
            self._inbox = await self._channel.open(self._req)
        except BaseException:
            self._finished = True  # open() forgot the request already
            raise

    async def admitted(self) -> int:
        """Wait until the daemon has queued the request; its queue position.

        Raises the daemon's refusal (busy, unknown model or voice...) before any piece is read.
        """
        await self.start()
        while self.position is None:
            reply = await self._next_reply()
            if reply.type == "accepted":
                self.position = int(reply.body.get("position", 0))
            elif reply.type == "error":
                self._finish()
                self.error = as_error(reply)
                raise self.error
            else:
                self._peeked.append(reply)
                break
        return self.position or 0

    async def _next_reply(self) -> Reply:
        if self._peeked:
            return self._peeked.pop(0)
        assert self._inbox is not None
        try:
            return await self._inbox.get()
        except BaseException:
            await self.aclose()
            raise

    def __aiter__(self: Stream) -> Stream:
        return self

    async def __anext__(self) -> Piece:
        if not self._started:
            await self.start()
        while not self._finished or self._peeked:
            reply = await self._next_reply()
            if reply.type == self.PIECE:
                return self._piece(reply.body)
            if reply.type == "accepted":
                self.position = int(reply.body.get("position", 0))
                continue
            self._finish()
            if reply.type == "done":
                self._done(reply.body)
                break
            self.error = as_error(reply)
            raise self.error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if self._started and not self._finished:
            self._finish()
            await self._channel.abort(self._req.id)

    def _finish(self) -> None:
        self._finished = True
        self._channel.release(self._req.id)


class GenerateStream(ReplyStream[str]):
    """One streamed generation: ``async for text in stream``; then ``stream.done``."""

    PIECE = "delta"

    def __init__(self, channel: Channel, req: Request) -> None:
        super().__init__(channel, req)
        self.done: Done | None = None

    def _piece(self, body: dict[str, Any]) -> str:
        return str(body.get("text", ""))

    def _done(self, body: dict[str, Any]) -> None:
        self.done = done_from_body(body)
