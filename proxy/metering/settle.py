"""The mechanics of a metered request's end, for its owner (:mod:`proxy.metering.meter`), which alone
calls them, and of waiting on an upstream while the client may leave:

- :func:`outcome`: the status and "client disconnected" a way of ending means;
- :func:`write_usage`: the row and its reservation in one transaction, written to its end even if the
  request is cancelled meanwhile (the cancellation goes on afterwards); a failure is counted, logged,
  the reservation released, and answered as an :class:`ApiError` (503 when it is temporary);
- :func:`unless_gone`: await a step, or give up when the client leaves first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from proxy.errors import ApiError
from proxy.metrics import Metrics
from proxy.storage.database import Database
from proxy.storage.errors import StorageError
from proxy.storage.usage import Reservation, UsageEvent, record_usage_on, release_on

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


async def write_usage(
    db: Database, metrics: Metrics, event: UsageEvent, reservation: Reservation | None
) -> ApiError | None:
    """Write the row (settling ``reservation``); on failure the error to answer with.

    Shielded from cancellation: a cancellation that arrives meanwhile (the server shutting down) is
    held until the row is written, or its failure handled, then raised. The wait is on the writer's
    own future, so the common path creates no task."""
    try:
        future = db.submit_write(lambda conn: record_usage_on(conn, event, reservation))
    except Exception as exc:  # the database is closed
        return await _failed(db, metrics, event, reservation, exc)
    cancelled = await _wait_out(future)
    error = None
    failure = StorageError("the write was cancelled") if future.cancelled() else future.exception()
    if failure is not None:
        error = await _failed(db, metrics, event, reservation, failure)
    if cancelled:
        raise asyncio.CancelledError
    return error


async def _wait_out(future: asyncio.Future[Any]) -> bool:
    """Wait until ``future`` is done, whatever cancels the caller meanwhile; whether something did."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled = cancelled or not future.cancelled()  # else the future itself was cancelled
        except Exception:
            pass  # the future's own error: the caller reads it
    return cancelled


async def _failed(
    db: Database, metrics: Metrics, event: UsageEvent, reservation: Reservation | None, exc: BaseException
) -> ApiError:
    """A row that could not be written: counted; the answer. A temporary failure (disk full, locked)
    keeps the row owed (``Database.owed``), its reservation held, to be written once the disk takes
    it (issue 18); any other failure (or a full queue) is logged and its reservation released."""
    metrics.ledger_failures.inc()
    if getattr(exc, "temporary", False):  # logged once per incident, by the writer
        what = f"usage row for request {event.request_id}"
        if db.owed.keep(lambda conn: record_usage_on(conn, event, reservation), event.billed_tokens, what):
            return _ledger_error(exc)
    else:
        log.error("usage row for request %s could not be written: %s", event.request_id, exc)
    if reservation is not None:
        try:
            released = db.submit_write(lambda conn: release_on(conn, reservation))
            await _wait_out(released)
            released.result()
        except Exception as again:
            log.error("could not release a quota reservation: %s", again)
    return _ledger_error(exc)


def _ledger_error(exc: BaseException) -> ApiError:
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
    """``step``'s result; :class:`ClientGone` (and ``step`` cancelled) if the client leaves first.

    A timer asks ``client_gone`` every ``DISCONNECT_POLL`` seconds and, when the client has left,
    cancels the waiting task, as ``asyncio.timeout`` does: no task or futures of its own, since this
    runs for every request. (A runtime stream whose reader is cancelled aborts its request on the
    daemon.)"""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    gone = False
    timer: asyncio.TimerHandle

    def check() -> None:
        nonlocal gone, timer
        if client_gone():
            gone = True
            task.cancel()
        else:
            timer = loop.call_later(DISCONNECT_POLL, check)

    timer = loop.call_later(DISCONNECT_POLL, check)
    try:
        return await step
    except asyncio.CancelledError:
        uncancel = getattr(task, "uncancel", None)  # Python 3.11+: the count of requested cancellations
        if gone and (uncancel is None or uncancel() == 0):  # ours alone, not also the server's
            raise ClientGone("the client went away while its request waited") from None
        raise
    finally:
        timer.cancel()
