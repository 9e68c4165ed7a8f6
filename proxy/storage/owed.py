"""Rows owed to the ledger: writes that failed for a temporary reason (disk full, locked) and are
tried again until the disk takes them (issue 18).

A request that was already running when the disk filled has delivered its tokens; its usage row
is not dropped but kept here, with whatever its write settles (its quota reservation) still held,
and a background task submits it again with a growing pause (:data:`FIRST_PAUSE` up to
:data:`LONGEST_PAUSE`). The queue is bounded (:data:`LIMIT`); a row beyond that is counted and
logged as lost. On close (:meth:`Owed.close`) every row is tried once more and what is still owed
is logged at ERROR (how many rows, how many tokens).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.storage.errors import StorageError

log = logging.getLogger(__name__)

LIMIT = 10_000  # rows kept at most; beyond that a row is lost (counted and logged)
FIRST_PAUSE = 0.5  # seconds before the first try again
LONGEST_PAUSE = 5.0  # the pause doubles after each failed round, up to this

WriteFn = Callable[[sqlite3.Connection], Any]
Submit = Callable[[WriteFn], "asyncio.Future[Any]"]


@dataclass(frozen=True)
class OwedRow:
    """One write owed to the ledger: the job, the tokens it bills, what it is (for the logs)."""

    write: WriteFn
    tokens: int
    what: str


class Owed:
    """The bounded queue of owed rows and the task that writes them once the disk takes them."""

    def __init__(self, submit: Submit, limit: int = LIMIT) -> None:
        self._submit = submit
        self._limit = limit
        self._rows: collections.deque[OwedRow] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._sleeping = False  # the task waits between rounds (cancelling it then loses nothing)
        self._stopping = False
        self.lost = 0  # rows refused because the queue was full
        self.written = 0  # owed rows written later

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def tokens(self) -> int:
        return sum(row.tokens for row in self._rows)

    def keep(self, write: WriteFn, tokens: int, what: str) -> bool:
        """Keep ``write`` to be tried again; False (counted, logged) when the queue is full."""
        if len(self._rows) >= self._limit:
            self.lost += 1
            log.error(
                "%s is lost: %d rows are already owed to the ledger (%d lost so far)", what, self._limit, self.lost
            )
            return False
        if not self._rows:
            log.warning("the ledger cannot take usage rows; keeping them and trying again (%s first)", what)
        self._rows.append(OwedRow(write, tokens, what))
        if not self._stopping and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._retry())
        return True

    async def close(self) -> None:
        """Stop trying in the background, try every row once more, log at ERROR what is still owed."""
        self._stopping = True
        if self._task is not None:
            if self._sleeping:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task  # a round under way ends first: its rows are written or kept
        if self._rows:
            await self._round()
        if self._rows:
            log.error(
                "%d usage row(s) (%d tokens) are still owed to the ledger and are lost at shutdown",
                len(self._rows),
                self.tokens,
            )

    async def _retry(self) -> None:
        pause = FIRST_PAUSE
        while self._rows and not self._stopping:
            self._sleeping = True
            try:
                await asyncio.sleep(pause)
            finally:
                self._sleeping = False
            pause = FIRST_PAUSE if await self._round() else min(pause * 2, LONGEST_PAUSE)
        if not self._rows:
            log.warning("every owed usage row is written (%d so far)", self.written)

    async def _round(self) -> bool:
        """Submit every owed row once; keep those that failed for a temporary reason (a row stays in
        the queue, and in the gauge, until it is written). Whether all went."""
        rows = list(self._rows)
        try:
            futures = [self._submit(row.write) for row in rows]
        except StorageError as exc:  # the database is closed
            log.debug("owed rows not tried: %s", exc)
            return False
        results = await asyncio.gather(*futures, return_exceptions=True)
        settled: set[int] = set()
        for row, result in zip(rows, results, strict=True):
            if not isinstance(result, BaseException):
                self.written += 1
            elif getattr(result, "temporary", False):
                continue
            else:
                log.error("%s could not be written and is dropped: %s", row.what, result)
            settled.add(id(row))
        self._rows = collections.deque(row for row in self._rows if id(row) not in settled)
        return len(settled) == len(rows)
