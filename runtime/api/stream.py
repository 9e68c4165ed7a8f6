"""One streamed generation from the runtime daemon, read as ``async for text in stream``.

The stream talks to its client only through :class:`Channel`, the three calls the client offers for
it: open a request (its inbox registered before the request is sent), release it, abort it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from runtime.api.errors import RuntimeRequestError
from runtime.api.inbox import Inbox, as_error
from runtime.api.protocol import Done, Reply, Request, done_from_body


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


class GenerateStream:
    """One streamed generation: ``async for text in stream``; then ``stream.done``.

    Leaving ``async with`` (or calling ``aclose``) before the end aborts the work on
    the daemon; so does cancelling the task that iterates.
    """

    def __init__(self, channel: Channel, req: Request) -> None:
        self._channel, self._req = channel, req
        self._inbox: Inbox | None = None
        self._started = False
        self._finished = False
        self._peeked: list[Reply] = []
        self.position: int | None = None
        self.done: Done | None = None
        self.error: RuntimeRequestError | None = None

    @property
    def id(self) -> str:
        return self._req.id

    async def __aenter__(self) -> GenerateStream:
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

        Raises the daemon's refusal (busy, unknown model...) before any text is read.
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

    def __aiter__(self) -> GenerateStream:
        return self

    async def __anext__(self) -> str:
        if not self._started:
            await self.start()
        while not self._finished or self._peeked:
            reply = await self._next_reply()
            if reply.type == "delta":
                return str(reply.body.get("text", ""))
            if reply.type == "accepted":
                self.position = int(reply.body.get("position", 0))
                continue
            self._finish()
            if reply.type == "done":
                self.done = done_from_body(reply.body)
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
