"""The token side of one ``rkllm_run``: what the result callback does, and who aborts.

``TokenStream.on_result`` runs on the ``rkllm_run`` thread once per token, so it
does little: count, check ``cancelled()``, decode, emit. Bytes are decoded with
an incremental UTF-8 decoder, so the partial character of a WAITING callback is
held until the NORMAL one completes it and ``emit`` never sees broken UTF-8.
Stop strings hold back only text that may be the start of one.

The callback never raises (an exception is recorded and re-raised by the
caller once ``rkllm_run`` has returned) and never calls into the runtime.
Stopping early goes through ``Aborter``: a helper thread that calls
``rkllm_abort`` (the runtime wants it from another thread than ``rkllm_run``'s),
and that also polls ``cancelled()`` while no token arrives (prefill).
"""

from __future__ import annotations

import codecs
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

from runtime.backends.base import Cancelled, Emit
from runtime.backends.rkllm.abi import RUN_ERROR, RUN_FINISH, RUN_WAITING, RKLLMResult
from runtime.backends.stop_strings import StopBuffer

if TYPE_CHECKING:
    from ctypes import _Pointer

log = logging.getLogger(__name__)

ABORTED, STOPPED, LENGTH, FAILED = "aborted", "stop", "length", "error"


@dataclass(frozen=True)
class PerfStat:
    """``RKLLMResult.perf`` as the FINISH callback reported it."""

    prefill_ms: float
    prefill_tokens: int
    decode_ms: float
    generate_tokens: int


class Aborter:
    """Calls ``abort`` from its own thread: when asked, or when ``cancelled()`` turns true.

    It repeats the call every ``REPEAT_SECONDS`` until closed, because an abort
    that lands just before ``rkllm_run`` starts may be forgotten by the runtime.
    """

    POLL_SECONDS = 0.02
    REPEAT_SECONDS = 0.1
    ISSUE_WAIT_SECONDS = 0.1

    def __init__(self, abort: Callable[[], None], cancelled: Cancelled) -> None:
        self._abort = abort
        self._cancelled = cancelled
        self._wake = threading.Event()
        self._issued = threading.Event()
        self._closed = False
        self._requested = False
        self.fired = False
        self._thread = threading.Thread(target=self._watch, name="rkllm-abort", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        """Abort the run; returns once ``rkllm_abort`` was called (or after a short wait)."""
        self._requested = True
        self._wake.set()
        self._issued.wait(self.ISSUE_WAIT_SECONDS)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join()

    def _watch(self) -> None:
        while not (self._requested or self._cancelled()):
            self._wake.wait(self.POLL_SECONDS)
            if self._closed:
                return
        while True:
            try:
                self._abort()
            except Exception:
                log.exception("rkllm_abort failed")
            self.fired = True
            self._issued.set()
            self._wake.clear()
            if self._closed or (self._wake.wait(self.REPEAT_SECONDS) and self._closed):
                return


class TokenStream:
    """The result callback's state for one run."""

    def __init__(
        self,
        emit: Emit,
        cancelled: Cancelled,
        stops: tuple[str, ...],
        limit: int,
        runtime_stops_at_limit: bool,
        request_abort: Callable[[], None],
    ) -> None:
        self._emit = emit
        self._cancelled = cancelled
        self._stops = StopBuffer(stops) if stops else None
        self._out: Callable[[str], None] = self._out_stops if stops else emit
        self._decode = codecs.getincrementaldecoder("utf-8")("replace").decode
        self._limit = limit
        self._runtime_limit = runtime_stops_at_limit
        self._request_abort = request_abort
        self._abort_requested = False
        self._closed = False
        self.tokens = 0
        self.finish_reason: str | None = None  # set when the stream ends before FINISH
        self.perf: PerfStat | None = None
        self.error = False
        self.exc: BaseException | None = None
        self.started = perf_counter()
        self.first_at = 0.0

    def on_result(self, result: _Pointer[RKLLMResult], state: int) -> int:
        """The body of the C callback. Returns 0: go on (stopping is the Aborter's job)."""
        try:
            if state <= RUN_WAITING:
                self._on_token(result[0].text)
            elif state == RUN_FINISH:
                p = result[0].perf
                ms = (p.prefill_time_ms, p.generate_time_ms)
                self.perf = PerfStat(ms[0], p.prefill_tokens, ms[1], p.generate_tokens)
            elif state == RUN_ERROR:
                self.error = True
        except BaseException as exc:  # nothing may unwind through C
            self.exc = exc
            self._end(FAILED)
        return 0

    def _on_token(self, text: bytes | None) -> None:
        self.tokens += 1
        if self.finish_reason is not None:
            if not self._abort_requested:  # the runtime went past its own limit
                self._abort()
            return
        if not self.first_at:
            self.first_at = perf_counter()
        if self._cancelled():
            self._end(ABORTED)
            return
        if text:
            piece = self._decode(text)
            if piece:
                self._out(piece)
        if self.tokens >= self._limit and self.finish_reason is None:
            self.finish_reason = LENGTH
            if not self._runtime_limit:
                self._abort()

    def _out_stops(self, piece: str) -> None:
        assert self._stops is not None
        text, hit = self._stops.push(piece)
        if text:
            self._emit(text)
        if hit:
            self._end(STOPPED)

    def abort(self) -> None:
        """From any thread: end the run as aborted (the daemon is unloading the model)."""
        self._end(ABORTED)

    def _end(self, reason: str) -> None:
        if self.finish_reason is None or reason in (ABORTED, FAILED):
            self.finish_reason = reason
        self._abort()

    def _abort(self) -> None:
        if not self._abort_requested:
            self._abort_requested = True
            self._request_abort()

    def close(self) -> None:
        """After ``rkllm_run`` returned: emit what was held back, unless the run was cut."""
        if self._closed:
            return
        self._closed = True
        if self.finish_reason not in (None, LENGTH):
            return
        tail = self._decode(b"", True) if self.finish_reason is None else ""
        if self._stops is None:
            if tail:
                self._emit(tail)
            return
        text, hit = self._stops.push(tail)
        if hit:
            self.finish_reason = STOPPED
        else:
            text += self._stops.flush()
        if text:
            self._emit(text)

    def timings(self, ended: float) -> tuple[float, float]:
        """(prefill ms, decode ms) by the wall clock, for runs that end without FINISH."""
        first = self.first_at or ended
        return (first - self.started) * 1000.0, (ended - first) * 1000.0


def outcome_counts(stream: TokenStream, ended: float) -> dict[str, Any]:
    """prompt/completion tokens and timings: the runtime's perf when FINISH came, else measured."""
    perf = stream.perf
    if perf is not None:
        return {
            "prompt_tokens": perf.prefill_tokens,
            "completion_tokens": perf.generate_tokens,
            "prefill_ms": perf.prefill_ms,
            "decode_ms": perf.decode_ms,
        }
    prefill_ms, decode_ms = stream.timings(ended)
    return {
        "prompt_tokens": 0,
        "completion_tokens": stream.tokens,
        "prefill_ms": prefill_ms,
        "decode_ms": decode_ms,
    }
