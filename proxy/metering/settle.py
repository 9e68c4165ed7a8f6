"""How a metered request ends, shared by every kind of request (text generations, speech).

- :func:`outcome`: the status and "client disconnected" a way of ending means;
- :func:`write_once`: run a request's row write to its end even if the request is cancelled meanwhile
  (the cancellation goes on afterwards), raising the write's error only when nothing else ended it;
- :func:`write_usage`: the row and its reservation in one transaction; a failure is counted, logged,
  the reservation released, and answered as an :class:`ApiError` (503 when it is temporary);
- :func:`unless_gone`: await a step, or give up when the client leaves first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.errors import ApiError
from proxy.metrics import Metrics
from proxy.storage.database import Database
from proxy.storage.errors import StorageError
from proxy.storage.usage import Reservation, UsageEvent, record_usage, release

log = logging.getLogger(__name__)

T = TypeVar("T")
DISCONNECT_POLL = 0.5  # seconds between checks that the client is still there while nothing is written
CANCELLED = 499  # nginx's "client closed request"; also what a request cancelled at shutdown records


class ClientGone(ConnectionResetError):
    """The client went away while its request waited for its first output."""


def outcome(exc: BaseException | None) -> tuple[int, bool]:
    """(HTTP status to record, client disconnected) for how a request ended."""
    if exc is None:
        return 200, False
    if isinstance(exc, ApiError):
        return exc.status, False
    if isinstance(exc, ConnectionError):  # a failed write, or ClientGone while waiting for the first output
        return CANCELLED, True
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED, False
    if getattr(exc, "temporary", False):  # a storage error the middleware answers with a 503
        return 503, False
    return 500, False


async def write_once(write: Awaitable[ApiError | None], exc: BaseException | None) -> None:
    """Await ``write`` shielded from cancellation; raise its error only for a request that ended well."""
    task = asyncio.ensure_future(write)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True  # finish the write first; the cancellation goes on after it
    if cancelled:
        raise asyncio.CancelledError
    error = task.result()
    if error is not None and exc is None:
        raise error


async def write_usage(
    db: Database, metrics: Metrics, event: UsageEvent, reservation: Reservation | None
) -> ApiError | None:
    """Write the row (settling ``reservation``); on failure the error to answer with."""
    try:
        await record_usage(db, event, reservation)
    except Exception as exc:
        metrics.ledger_failures.inc()
        if not getattr(exc, "temporary", False):  # a temporary one is logged once per incident, by the writer
            log.error("usage row for request %s could not be written: %s", event.request_id, exc)
        if reservation is not None:
            try:
                await release(db, reservation)
            except Exception as again:
                log.error("could not release a quota reservation: %s", again)
        return _ledger_error(exc)
    return None


def _ledger_error(exc: Exception) -> ApiError:
    if isinstance(exc, StorageError) and getattr(exc, "temporary", False):
        return ApiError(
            503,
            "the usage ledger is unavailable right now; retry shortly",
            type="server_error",
            code="service_unavailable",
            headers={"retry-after": "5"},
        )
    return ApiError(500, "the usage ledger could not be written", type="server_error", code="ledger_error")


async def unless_gone(step: Awaitable[T], client_gone: Callable[[], bool]) -> T:
    """``step``'s result; :class:`ClientGone` (and ``step`` cancelled) if the client leaves first."""
    task = asyncio.ensure_future(step)
    try:
        while not task.done():
            await asyncio.wait((task,), timeout=DISCONNECT_POLL)
            if not task.done() and client_gone():
                raise ClientGone("the client went away while its request waited")
        return task.result()
    finally:
        if not task.done():
            task.cancel()  # a runtime stream whose reader is cancelled aborts its request on the daemon
            await asyncio.wait((task,))
