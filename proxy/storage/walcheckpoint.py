"""WAL checkpoints off the commit path, on a thread of their own.

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1000 pages: for the
ledger's writer that is one commit in about 180 paying 5-8 ms to copy the WAL into the database
file, a latency spike for every request waiting on that commit. So the writer connection turns it
off (``PRAGMA wal_autocheckpoint = 0``) and :class:`Checkpointer` does the work on its own
connection instead, once ``every`` transactions have committed since the last checkpoint or
``interval`` seconds after the first of them, whichever comes first (nothing runs while nobody
writes):

- ``PASSIVE`` checkpoints copy the WAL while the writer goes on, each pass what arrived during the
  one before (so each pass is shorter than the one before);
- the writer starts the WAL over from its beginning only if, when it begins a transaction, every
  frame has been copied. Under steady writing that never happens by itself (frames arrive during
  each pass), so once a pass is short, the writer is held off between two transactions
  (:meth:`begin_write` waits) for a last pass that copies the little left: a fraction of a
  millisecond, after which its next commit starts the WAL over;
- ``PASSIVE`` cannot copy frames a reader's snapshot still needs, nor can the WAL start over while a
  reader uses it: readers that always overlap would let the WAL grow without bound. So when
  ``PASSIVE`` has fallen behind ``restart_after`` times in a row, or the WAL holds more than
  ``max_wal_pages`` frames, a ``RESTART`` checkpoint (writer held off) waits up to ``restart_wait``
  seconds for the readers to move on;
- a thread that gets no CPU checkpoints nothing: on a starved machine (2 cores at load 15) the writer
  outran it and the WAL reached 30 MB. Once ``backlog`` transactions have committed since the last
  pass began, the writer waits (in :meth:`begin_write`) for the round under way to end, as SQLite's
  own automatic checkpoint would have made a commit wait, so the WAL stays bounded whatever the
  scheduler does;
- at shutdown, after the last write, a ``TRUNCATE`` checkpoint leaves an empty WAL file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 200  # commits: the ledger writes about 5 pages a commit, so about SQLite's 1000 pages
BACKLOG = 2  # times ``every``: commits since the last pass began beyond which the writer waits for the round
CHECKPOINT_INTERVAL = 1.0  # seconds after the first commit not yet checkpointed
MAX_WAL_PAGES = 4000  # about 16 MB with 4 KiB pages: beyond it, RESTART
RESTART_AFTER = 5  # PASSIVE checkpoints in a row that could not copy every frame: RESTART
RESTART_WAIT = 0.2  # seconds a RESTART may wait for readers (the writer is held off as long)
CATCH_UP_PASSES = 3  # PASSIVE passes while the writer goes on, at most, before the held one
SHORT_PASS = 0.001  # seconds: what arrives during a pass this short is quick to copy with the writer held off


@dataclass
class CheckpointStats:
    """Counters kept by the checkpoint thread (read them for metrics and tests)."""

    checkpoints: int = 0  # PASSIVE checkpoints run (a few per round)
    held: int = 0  # rounds that held the writer off for their last pass
    behind: int = 0  # PASSIVE checkpoints that could not copy every frame (a reader needed them)
    restarts: int = 0  # RESTART checkpoints tried
    restarts_busy: int = 0  # of which gave up waiting for readers
    failures: int = 0  # checkpoints that raised
    waits: int = 0  # times the writer waited for a round because it had outrun the thread (backlog)
    wal_pages: int = 0  # frames in the WAL at the last checkpoint


class Checkpointer:
    """Checkpoints the WAL from a thread of its own; the writer brackets each transaction with it."""

    def __init__(
        self,
        *,
        every: int = CHECKPOINT_EVERY,
        interval: float = CHECKPOINT_INTERVAL,
        max_wal_pages: int = MAX_WAL_PAGES,
        restart_after: int = RESTART_AFTER,
        restart_wait: float = RESTART_WAIT,
    ) -> None:
        if every < 1 or interval <= 0 or max_wal_pages < 1 or restart_after < 1 or restart_wait < 0:
            raise ValueError("checkpoint thresholds must be positive")
        self.stats = CheckpointStats()
        self._every = every
        self._interval = interval
        self._max_wal_pages = max_wal_pages
        self._restart_after = restart_after
        self._restart_wait_ms = round(restart_wait * 1000)
        lock = threading.Lock()
        self._lock = lock
        self._due = threading.Condition(lock)  # the checkpoint thread waits for commits here
        self._gate = threading.Condition(lock)  # the writer waits here while it is held off
        self._pending = 0  # transactions since the last pass began
        self._writing = False
        self._holding = False
        self._stopping = False
        self._lagging = 0  # PASSIVE checkpoints in a row that fell behind
        self._backlog = every * BACKLOG
        self._rounds = 0  # rounds ended (the writer waiting for one watches this)
        self._thread: threading.Thread | None = None

    def start(self, conn: sqlite3.Connection) -> None:
        """Start the thread; it owns ``conn`` (a write-capable connection) and closes it when stopped."""
        conn.execute(f"PRAGMA busy_timeout = {self._restart_wait_ms}")  # only RESTART and TRUNCATE wait
        self._thread = threading.Thread(target=self._run, args=(conn,), name="db-checkpoint", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def begin_write(self) -> None:
        """The writer is about to begin a transaction: wait while a checkpoint holds writes off."""
        with self._lock:
            if self._pending >= self._backlog and self.running and not self._stopping:
                self.stats.waits += 1
                self._due.notify()
                rounds = self._rounds
                self._gate.wait_for(lambda: self._rounds != rounds or self._stopping or not self.running, timeout=5.0)
            while self._holding:
                self._gate.wait()
            self._writing = True

    def end_write(self) -> None:
        """The writer's transaction is over; wake the thread on the first and on the ``every``-th."""
        with self._lock:
            self._writing = False
            self._pending += 1
            if self._holding:
                self._gate.notify_all()
            if self._pending == 1 or self._pending == self._every:
                self._due.notify()

    def stop(self) -> None:
        """Checkpoint (TRUNCATE) what the writer left, then end the thread; call once the writer stopped."""
        with self._lock:
            self._stopping = True
            self._due.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while self._wait_until_due():
                try:
                    self._round(conn)
                except sqlite3.Error as exc:
                    self.stats.failures += 1
                    log.warning("WAL checkpoint failed: %s", exc)
                except Exception:  # a bug: log it and keep checkpointing rather than let the WAL grow
                    self.stats.failures += 1
                    log.exception("WAL checkpoint failed")
                finally:
                    self._round_ended()
            self._final(conn)
        finally:
            conn.close()
            self._round_ended()  # a writer waiting on a thread that ended waits no longer

    def _round_ended(self) -> None:
        with self._lock:
            self._rounds += 1
            self._gate.notify_all()

    def _wait_until_due(self) -> bool:
        """Block until a checkpoint is due (True) or the checkpointer is stopping (False)."""
        with self._lock:
            self._due.wait_for(lambda: self._pending > 0 or self._stopping)
            self._due.wait_for(lambda: self._pending >= self._every or self._stopping, timeout=self._interval)
            return not self._stopping

    def _round(self, conn: sqlite3.Connection) -> None:
        """Passes while the writer goes on, then (if frames keep arriving) one with the writer held off."""
        for attempt in range(1, CATCH_UP_PASSES + 1):
            with self._lock:
                self._pending = 0
            started = time.perf_counter()
            frames, complete = self._passive(conn)
            with self._lock:
                written = self._pending > 0
            # Not complete: a reader's snapshot needs the rest, holding the writer off would not help.
            # Nothing written meanwhile: the next commit starts the WAL over by itself.
            if not complete or not written:
                break
            if attempt == CATCH_UP_PASSES or time.perf_counter() - started < SHORT_PASS:
                with self._writes_held():
                    self.stats.held += 1
                    frames, complete = self._passive(conn)
                break
        self._lagging = 0 if complete else self._lagging + 1
        if self._lagging >= self._restart_after or frames > self._max_wal_pages:
            self._restart(conn, frames)

    def _passive(self, conn: sqlite3.Connection) -> tuple[int, bool]:
        """One PASSIVE checkpoint, which never waits: (frames in the WAL, whether it copied them all)."""
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        complete = not busy and copied >= frames
        self.stats.checkpoints += 1
        self.stats.wal_pages = frames
        if not complete:
            self.stats.behind += 1
        return frames, complete

    def _restart(self, conn: sqlite3.Connection, frames: int) -> None:
        """Wait (briefly) for the readers to leave the WAL so that the next commit starts it over."""
        self.stats.restarts += 1
        self._lagging = 0  # whatever happens, next time only after as many misses: RESTART stalls the writer
        with self._writes_held():
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        if busy:
            self.stats.restarts_busy += 1
            log.info("the WAL (%d pages) could not be restarted: readers stayed on it", frames)

    @contextmanager
    def _writes_held(self) -> Iterator[None]:
        """Hold the writer off (between two transactions) for the duration."""
        with self._lock:
            self._holding = True
            while self._writing:
                self._gate.wait()
        try:
            yield
        finally:
            with self._lock:
                self._holding = False
                self._gate.notify_all()

    def _final(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("final WAL checkpoint failed: %s", exc)
