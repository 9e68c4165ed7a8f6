"""One loaded model: a backend, a worker thread and a bounded FIFO in front of it.

A ``Job`` (``runtime.daemon.job``) is one queued ``generate``, ``embed``, ``speak`` or ``transcribe``;
the worker runs jobs one at a time. A generation's text goes through a ``TextStream`` to the ``Outbox``
(the daemon's shared ROUTER socket): the first piece at once, then at most one frame per stream
interval, the last text together with ``done`` in one message. The other jobs are in ``jobs``.

Each worker runs at a lower priority than the daemon's main thread (and the threads llama.cpp starts
from it inherit that), so the hop that delivers a token preempts the arithmetic of the next one
instead of waiting behind it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.api.models import ModelConfig
from runtime.api.protocol import (
    ERR_ABORTED,
    ERR_BACKEND,
    ERR_DEADLINE,
    Done,
    GenerateSpec,
    Perf,
    done_to_body,
)
from runtime.api.state import ModelState
from runtime.backends.base import BACKEND_KINDS, Backend, BackendError, Outcome, create_backend
from runtime.daemon.errors import BusyError
from runtime.daemon.job import Job, Outbox, err
from runtime.daemon.jobs import run_job
from runtime.daemon.memory import check_fits, give_back_memory
from runtime.daemon.modelfile import check_model_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    depth: int = 8  # jobs waiting before ``busy``
    stream_interval: float = 0.0  # seconds between two text messages of one job, after its first
    nice: int = 0  # how many levels below the daemon the model's threads run


class ModelWorker:
    """One loaded model: a backend, a thread and a bounded FIFO."""

    def __init__(self, config: ModelConfig, options: WorkerOptions, outbox: Outbox) -> None:
        self.config = config
        self.state = "loading"
        self.error = ""
        self.running: Job | None = None
        self.served = 0
        self.warm_ms: float | None = None  # how long the warm-up after the load took
        self._options = options
        self._outbox = outbox
        self._queue: deque[Job | None] = deque()
        self._lock = threading.Lock()
        # One token per submit; the worker sleeps in C on it (quicker to wake than a Condition).
        self._wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._backend: Backend | None = None
        self._thread = threading.Thread(target=self._run, name=f"model-{config.name}", daemon=True)

    def start(self, on_loaded: Callable[[ModelWorker], None]) -> None:
        self._on_loaded = on_loaded
        self._thread.start()

    def submit(self, job: Job) -> int:
        """Queue ``job``; return how many jobs are ahead of it. Raises BusyError."""
        with self._lock:
            if self.state != "ready":
                raise BusyError(f"model {self.config.name!r} is {self.state}")
            backend = self._backend
            assert backend is not None  # ready: loaded, and not unloaded before the state changed
            backend.admit(job.spec)  # BackendError: a request this model cannot serve
            waiting = len(self._queue)
            if waiting >= self._options.depth:
                raise BusyError(f"model {self.config.name!r} queue is full ({self._options.depth} waiting)")
            self._queue.append(job)
        self._wakeups.put(None)
        return waiting + (1 if self.running else 0)

    def drop(self, job: Job) -> bool:
        """Take ``job`` out of the queue if it has not started; True when it was there."""
        with self._lock:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            return True

    def expire(self, now: float) -> list[Job]:
        """Take out the queued jobs whose deadline has passed."""
        with self._lock:
            expired = [j for j in self._queue if j is not None and j.deadline < now]
            for job in expired:
                self._queue.remove(job)
        return expired

    def stop(self) -> None:
        """Ask the worker to finish: queued jobs are aborted, then the backend unloads."""
        with self._lock:
            for job in self._queue:
                if job is not None:
                    job.aborted.set()
            self._queue.append(None)
            if self.state == "ready":
                self.state = "unloading"
        self._wakeups.put(None)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        if self._options.nice:
            _lower_priority(self._options.nice)
        if not self._load():
            return
        while True:
            with self._lock:
                waiting = bool(self._queue)
                job = self._queue.popleft() if waiting else None
            if not waiting:
                self._wakeups.get()  # a dropped job's token only costs one more look
                continue
            if job is None:
                break
            self._serve(job)
        self._unload()

    def _load(self) -> bool:
        try:
            backend = create_backend(self.config.backend)
            weights = backend.weights(self.config)
            check_model_file(weights)
            check_fits(weights)
            backend.load(self.config)
        except BackendError as exc:
            self.state, self.error = "failed", str(exc)
        except Exception as exc:  # a backend bug must not kill the daemon
            log.exception("loading %s failed", self.config.name)
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            self._warm(backend)
            self._backend, self.state = backend, "ready"
        self._on_loaded(self)
        return self.state == "ready"

    def _warm(self, backend: Backend) -> None:
        """Before the model says ready, its first request's costs are paid here, after every load
        (at start, a reconciler's, a keep-alive's, after a restart): a first request took 4-7 s."""
        started = time.perf_counter()
        try:
            backend.warm()
        except Exception as exc:  # a model that cannot warm up still serves; its requests say why
            log.warning("warming up %s failed: %s", self.config.name, exc)
            return
        self.warm_ms = (time.perf_counter() - started) * 1000
        log.info("model %s warmed up in %.0f ms", self.config.name, self.warm_ms)

    def _unload(self) -> None:
        if self._backend is not None:
            try:
                self._backend.unload()
            except Exception:
                log.exception("unloading %s failed", self.config.name)
            self._backend = None
            give_back_memory()
        self.state = "unloaded"

    def _serve(self, job: Job) -> None:
        out = self._outbox
        if job.aborted.is_set():
            out.end(job.identity, job.rid, "error", err(ERR_ABORTED, "aborted before it ran"))
            return
        if time.time() > job.deadline:
            out.end(job.identity, job.rid, "error", err(ERR_DEADLINE, "deadline passed in the queue"))
            return
        if not isinstance(job.spec, GenerateSpec):
            self._answer(job)
            return
        started = time.perf_counter()
        self.running = job
        assert self._backend is not None
        text = TextStream(out, job.identity, job.rid, self._options.stream_interval)
        try:
            outcome = self._backend.generate(job.spec, text, job.cancelled)
        except BackendError as exc:
            out.end(job.identity, job.rid, "error", exc.frame(), text.rest())
            return
        except Exception as exc:
            log.exception("generate on %s failed", self.config.name)
            error = err(ERR_BACKEND, f"{type(exc).__name__}: {exc}")
            out.end(job.identity, job.rid, "error", error, text.rest())
            return
        finally:
            self.running = None
            self.served += 1
        self._finish(job, outcome, (started - job.enqueued) * 1000, text.rest())

    def _answer(self, job: Job) -> None:
        """An ``embed``, ``speak`` or ``transcribe`` job (``runtime.daemon.jobs``): its last frame."""
        assert self._backend is not None
        self.running = job
        queue_ms = (time.perf_counter() - job.enqueued) * 1000
        try:
            kind, body = run_job(self._backend, job, self._outbox, queue_ms)
        except BackendError as exc:
            kind, body = "error", exc.frame()
        except Exception as exc:
            log.exception("%s on %s failed", type(job.spec).__name__, self.config.name)
            kind, body = "error", err(ERR_BACKEND, f"{type(exc).__name__}: {exc}")
        finally:
            self.running = None
            self.served += 1
        self._outbox.end(job.identity, job.rid, kind, body)

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """With the model's tokenizer, on the caller's thread (read-only, beside a generation)."""
        backend = self._backend  # once: an unload sets it to None on the worker's thread
        if backend is None or self.state != "ready":
            raise BusyError(f"model {self.config.name!r} is {self.state}")
        return backend.tokenize(text, add_special)

    def detokenize(self, tokens: list[int]) -> str:
        backend = self._backend
        if backend is None or self.state != "ready":
            raise BusyError(f"model {self.config.name!r} is {self.state}")
        return backend.detokenize(tokens)

    def _finish(self, job: Job, outcome: Outcome, queue_ms: float, rest: str) -> None:
        counts = {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens}
        if outcome.finish_reason == "aborted":
            code, why = (ERR_ABORTED, "aborted") if job.aborted.is_set() else (ERR_DEADLINE, "deadline passed")
            self._outbox.end(job.identity, job.rid, "error", {**err(code, why), **counts})
            return
        tps = outcome.completion_tokens / (outcome.decode_ms / 1000) if outcome.decode_ms > 0 else 0.0
        done = Done(
            outcome.finish_reason,
            outcome.prompt_tokens,
            outcome.completion_tokens,
            Perf(queue_ms, outcome.prefill_ms, tps),
            outcome.tool_calls,
            outcome.logprobs,
        )
        self._outbox.end(job.identity, job.rid, "done", done_to_body(done), rest)

    def describe(self) -> dict[str, Any]:
        """This model as the ``models`` and ``hello`` answers carry it (:class:`ModelState` on the wire)."""
        backend = self._backend  # once: an unload sets it to None on the worker's thread
        return ModelState(
            name=self.config.name,
            backend=self.config.backend,
            kind=BACKEND_KINDS.get(self.config.backend, "llm"),
            path=self.config.path,
            params=self.config.params,
            state=self.state,
            error=self.error,
            queued=len(self._queue),
            queue_depth=self._options.depth,
            running=self.running is not None,
            served=self.served,
            warm_ms=None if self.warm_ms is None else round(self.warm_ms, 1),
            context=backend.context_length() if backend is not None else None,
            memory_bytes=self._memory(backend),
            info=backend.info() if backend is not None else {},
        ).to_wire()

    def _memory(self, backend: Backend | None) -> int | None:
        """What the loaded model holds in memory (issue 19); a backend that cannot say is None."""
        if backend is None or self.state != "ready":
            return None
        try:
            return backend.memory_bytes()
        except Exception:  # a figure for a page; never a reason to fail the model list
            log.exception("model %s: its memory figure failed", self.config.name)
            return None


class TextStream:
    """One job's text on its way to the outbox (the ``emit`` a backend gets).

    The first piece goes at once (time to first token); after it, text goes at most once per
    ``interval``, so a fast model sends a few tokens per message instead of waking the
    daemon's and the client's threads for every one. Text marked ``final`` is held for the
    end frame, which carries it in the same message.
    """

    __slots__ = ("_identity", "_interval", "_next_at", "_outbox", "_parts", "_rid")

    def __init__(self, outbox: Outbox, identity: bytes, rid: str, interval: float) -> None:
        self._outbox, self._identity, self._rid, self._interval = outbox, identity, rid, interval
        self._parts: list[str] = []
        self._next_at = 0.0

    def __call__(self, text: str, final: bool = False) -> None:
        self._parts.append(text)
        if final:
            return
        now = time.perf_counter()
        if now >= self._next_at:
            self._outbox.delta(self._identity, self._rid, self.rest())
            self._next_at = now + self._interval

    def rest(self) -> str:
        """The text held back so far (and no longer held)."""
        text = "".join(self._parts)
        self._parts.clear()
        return text


def _lower_priority(by: int) -> None:
    """Run the calling thread, and the threads it starts from now on, ``by`` nice levels lower."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError as exc:  # a sandbox without setpriority: run at the daemon's priority
        log.warning("could not lower the model thread's priority: %s", exc)
