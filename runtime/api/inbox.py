"""The replies of one request to the runtime as they arrive (:class:`Inbox`), and their errors.

The client's reader puts each reply from the daemon into the inbox of its request id; ``GONE``
tells every inbox that the connection dropped. An error reply becomes the client's own error
(:func:`as_error`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from runtime.api.errors import RuntimeRequestError, RuntimeTimeoutError, RuntimeUnavailableError
from runtime.api.protocol import Reply

GONE = Reply("", "_gone")  # put into every inbox when the daemon goes away
GRACE = 1.0  # seconds past a request's deadline before its inbox gives up (the daemon's error first)


class Inbox:
    """The replies of one request as they arrive, and the one task waiting for them.

    The deadline is one timer per request (plus a grace, so the daemon's own deadline
    error arrives first), not a timeout per reply.
    """

    __slots__ = ("_expired", "_items", "_op", "_timer", "_waiter")

    def __init__(self, deadline: float, op: str) -> None:
        loop = asyncio.get_running_loop()
        self._items: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._op, self._expired = op, False
        self._timer = loop.call_at(loop.time() + max(0.0, deadline - time.time()) + GRACE, self._expire)

    def put(self, reply: Reply) -> None:
        self._items.append(reply)
        self._wake()

    def _expire(self) -> None:
        self._expired = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Reply:
        while not self._items:
            if self._expired:
                raise RuntimeTimeoutError(f"runtime gave no answer to {self._op} before its deadline")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        reply = self._items.popleft()
        if reply is GONE:
            raise RuntimeUnavailableError("the runtime daemon went away during the request")
        return reply

    def close(self) -> None:
        self._timer.cancel()


def as_error(reply: Reply) -> RuntimeRequestError:
    body = dict(reply.body)
    code = str(body.pop("code", "error"))
    message = str(body.pop("message", "runtime error"))
    return RuntimeRequestError(code, message, body)
