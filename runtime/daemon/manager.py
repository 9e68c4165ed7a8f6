"""The models this daemon holds (one ``worker.ModelWorker`` each) and the index of jobs by request id.

The manager is driven by the server's main thread: it loads and unloads models, queues a
``generate`` on its model's worker (or answers ``busy``/``unknown_model`` at once) and finds a job
again for ``abort``. Workers send their requests' text and end frames to the client themselves,
through the daemon's shared ROUTER socket (``runtime.daemon.socket``, under its lock).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from runtime.api.models import ModelConfig
from runtime.api.protocol import (
    ERR_BUSY,
    ERR_UNKNOWN_MODEL,
)
from runtime.backends.base import BackendError
from runtime.daemon.errors import BusyError
from runtime.daemon.job import Job, Outbox, err
from runtime.daemon.worker import ModelWorker, WorkerOptions

log = logging.getLogger(__name__)


class ModelManager:
    """The models this daemon holds, and the index of jobs by request id."""

    def __init__(self, options: WorkerOptions, outbox: Outbox) -> None:
        self._options = options
        self._outbox = outbox
        self._workers: dict[str, ModelWorker] = {}
        self._jobs: dict[str, tuple[ModelWorker, Job]] = {}
        self._lock = threading.Lock()

    def load(self, config: ModelConfig, on_loaded: Callable[[ModelWorker], None]) -> ModelWorker:
        """Start loading ``config`` in its worker thread; ``on_loaded`` runs there when done."""
        with self._lock:
            old = self._workers.get(config.name)
            if old is not None and old.state in ("loading", "ready", "unloading"):
                raise BusyError(f"model {config.name!r} is already {old.state}")
            worker = ModelWorker(config, self._options, self._outbox)
            self._workers[config.name] = worker
        worker.start(on_loaded)
        return worker

    def unload(self, name: str) -> ModelWorker:
        with self._lock:
            worker = self._workers.pop(name, None)
        if worker is None:
            raise KeyError(name)
        worker.stop()
        return worker

    def submit(self, job: Job) -> int:
        worker = self._workers.get(job.spec.model)
        if worker is None:
            raise KeyError(job.spec.model)
        # Indexed before the worker can see it: a quick job may end (and be forgotten, on the
        # worker's thread) before submit returns.
        self._jobs[job.rid] = (worker, job)
        try:
            return worker.submit(job)
        except (BusyError, BackendError):
            self._jobs.pop(job.rid, None)
            raise

    def finished(self, rid: str) -> None:
        self._jobs.pop(rid, None)

    def abort(self, rid: str) -> Job | None:
        """Abort a job. Returns it when it was still queued (and is now dropped)."""
        entry = self._jobs.get(rid)
        if entry is None:
            return None
        worker, job = entry
        job.aborted.set()
        if worker.drop(job):
            self._jobs.pop(rid, None)
            return job
        return None

    def abort_identity(self, identity: bytes) -> int:
        """Abort every job of a client that went away."""
        n = 0
        for _, job in list(self._jobs.values()):
            if job.identity == identity:
                job.aborted.set()
                n += 1
        return n

    def expire(self) -> list[Job]:
        now = time.time()
        return [job for worker in self.workers() for job in worker.expire(now)]

    def active_jobs(self) -> int:
        return len(self._jobs)

    def abort_all(self) -> None:
        for _, job in list(self._jobs.values()):
            job.aborted.set()

    def worker(self, name: str) -> ModelWorker | None:
        return self._workers.get(name)

    def workers(self) -> list[ModelWorker]:
        return list(self._workers.values())

    def describe(self) -> list[dict[str, Any]]:
        return [w.describe() for w in self.workers()]

    def unknown(self, name: str) -> dict[str, Any]:
        known = ", ".join(sorted(self._workers)) or "none"
        return err(ERR_UNKNOWN_MODEL, f"model {name!r} is not loaded (loaded: {known})")

    def busy(self, exc: BusyError) -> dict[str, Any]:
        return err(ERR_BUSY, str(exc))
