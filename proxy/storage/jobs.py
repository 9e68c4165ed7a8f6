"""A write job and the way its result gets back to the event loop that is waiting for it.

The writer thread of :mod:`proxy.storage.database` runs jobs in batches; a job's future is settled on
its own event loop, with one wake-up per loop for a committed batch rather than one per job.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

WriteFn = Callable[[sqlite3.Connection], Any]
_Result = tuple[asyncio.Future[Any], Any, BaseException | None]


@dataclass
class WriterStats:
    """Counters kept by the writer thread (read them for metrics and tests)."""

    transactions: int = 0
    jobs: int = 0
    failed_jobs: int = 0
    failed_transactions: int = 0


@dataclass
class WriteJob:
    fn: WriteFn
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    delivered: bool = False


def deliver(job: WriteJob, value: Any, error: BaseException | None) -> None:
    """Answer one job on its event loop."""
    job.delivered = True
    _settle_on(job.loop, [(job.future, value, error)])


def deliver_results(done: list[tuple[WriteJob, Any]]) -> None:
    """Answer committed jobs: one wake-up per event loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
    for job, value in done:
        job.delivered = True
        by_loop.setdefault(job.loop, []).append((job.future, value, None))
    for loop, results in by_loop.items():
        _settle_on(loop, results)


def _settle_on(loop: asyncio.AbstractEventLoop, results: list[_Result]) -> None:
    try:
        loop.call_soon_threadsafe(_settle, results)
    except RuntimeError:  # the caller's loop is closed; nobody is waiting any more
        log.debug("results of %d write jobs dropped: their event loop is closed", len(results))


def _settle(results: list[_Result]) -> None:
    for future, value, error in results:
        if future.done():  # the caller was cancelled; the write happened anyway
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
