"""One structured log line per request: request id, key id, model, status, tokens, latency, TTFT.

A metered request (text, embeddings, the tokenizer's, speech, transcription) is logged from the one
place its usage row is written (``proxy.metering.meter.MeteredCall``, through :func:`log_request`),
so the line and the ledger always agree; every other request (models, health, refusals before a
metered request began) is logged by :func:`proxy.middleware.request_middleware`. The middleware puts
an :class:`AccessEntry` in a context variable for the request; a metered request marks it logged, so
no request is logged twice (a row written in a task of its own shares the entry through the copied
context).

The line's fields travel as ``extra={"fields": ...}``: the JSON formatter of
``llmserver.logging`` (``LLMSERVER_LOG_FORMAT=json``) writes them as JSON keys; the text format
shows the message, which holds the same values. Nothing here ever sees a key's secret: the key
appears as its numeric id, the URL as its path without the query string.

Cost: a line through the ``logging`` machinery (record, handler lock, formatter, one ``write`` and
``flush``) costs the proxy about 35 us of CPU per request in place, a quarter of a cached-key
``GET /v1/models``. The commands that serve (``setup_logging``) therefore install a
:class:`LineSink`: the same line, formatted here, appended to a buffer that goes out in one write
every ``FLUSH_SECONDS`` or ``FLUSH_LINES`` lines and at exit, as nginx buffers its access log.
Lines still honour the logger's level (``LLMSERVER_LOG_LEVEL=WARNING`` silences them); a line may
trail the lines logged around it by up to ``FLUSH_SECONDS``, and a SIGKILL loses at most that much
(the ledger is the durable record). Without a sink (in-process tests, a library user) lines go
through ``logging`` as before.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, TextIO

log = logging.getLogger(__name__)


@dataclass
class AccessEntry:
    """The current request's access-log state, shared with the tasks it starts."""

    logged: bool = False


_current: contextvars.ContextVar[AccessEntry | None] = contextvars.ContextVar("access_entry", default=None)


def begin() -> contextvars.Token[AccessEntry | None]:
    """Start a request's entry (the middleware calls this); reset the returned token at its end."""
    return _current.set(AccessEntry())


def end(token: contextvars.Token[AccessEntry | None]) -> bool:
    """Finish the entry; whether a line for this request was logged already."""
    entry = _current.get()
    _current.reset(token)
    return entry is not None and entry.logged


def log_request(
    *,
    request_id: str,
    method: str,
    path: str,
    status: int,
    latency_ms: float,
    key_id: int | None = None,
    model: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    ttft_ms: float | None = None,
    client_request_id: str | None = None,
    quiet: bool = False,
) -> None:
    """Log one request's line (at DEBUG when ``quiet``: probes) and mark the current entry logged."""
    entry = _current.get()
    if entry is not None:
        entry.logged = True
    level = logging.DEBUG if quiet else logging.INFO
    if not log.isEnabledFor(level):
        return
    latency = round(latency_ms, 3)
    ttft = None if ttft_ms is None else round(ttft_ms, 3)
    message = f"{method} {path} {status} request={request_id}"
    if key_id is not None:
        message += f" key_id={key_id}"
    if model is not None:
        message += f" model={model}"
    if prompt_tokens is not None:
        message += f" prompt_tokens={prompt_tokens} completion_tokens={completion_tokens}"
    message += f" latency_ms={latency}" if ttft is None else f" latency_ms={latency} ttft_ms={ttft}"
    if _sink is not None and not _sink.json:
        _sink.write(level, message)  # the text line needs no fields: none are gathered
        return
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "key_id": key_id,
        "model": model,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_ms": latency,
        "ttft_ms": ttft,
        "client_request_id": client_request_id,
    }
    if _sink is not None:
        _sink.write(level, message, fields)
    else:
        log.log(level, message, extra={"fields": fields})


FLUSH_SECONDS = 0.1
_LEVEL_NAMES = {logging.INFO: "INFO", logging.DEBUG: "DEBUG"}
FLUSH_LINES = 64


class LineSink:
    """Access lines formatted as ``llmserver.logging`` formats a record (``text``: local time, level,
    logger, message; ``json``: one object with the fields), buffered, written to ``stream``."""

    def __init__(self, stream: TextIO, log_format: str = "text") -> None:
        self.stream = stream
        self.json = log_format == "json"
        self._lines: list[str] = []
        self._flush_at: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def write(self, level: int, message: str, fields: dict[str, Any] | None = None) -> None:
        self._lines.append(self.format(time.time(), level, message, fields))
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif self._flush_at is None:
            try:
                self._flush_at = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no event loop (a command-line tool): no reason to wait
                self.flush()

    def format(self, created: float, level: int, message: str, fields: dict[str, Any] | None = None) -> str:
        """One line, newline included."""
        second = int(created)
        if second != self._second:  # the date and time change once a second: format them once
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S" if self.json else "%Y-%m-%d %H:%M:%S", self._clock(second))
        millis = int((created - second) * 1000)
        name = _LEVEL_NAMES.get(level) or logging.getLevelName(level)
        if not self.json:
            return f"{self._stamp},{millis:03d} {name} {log.name}: {message}\n"
        line = {"time": f"{self._stamp}.{millis:03d}+00:00", "level": name, "logger": log.name, "message": message}
        line.update({k: v for k, v in (fields or {}).items() if k not in line})
        return json.dumps(line, ensure_ascii=False, default=str) + "\n"

    def _clock(self, second: int) -> time.struct_time:
        return time.gmtime(second) if self.json else time.localtime(second)

    def flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        if self._lines:
            text, self._lines = "".join(self._lines), []
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: the lines cannot be written anywhere
                pass


_sink: LineSink | None = None


def use_sink(sink: LineSink | None) -> None:
    """Send access lines to ``sink`` (None: through ``logging``); what the previous one held is written."""
    global _sink
    if _sink is not None:
        _sink.flush()
    _sink = sink


def flush() -> None:
    """Write the buffered lines now (at shutdown)."""
    if _sink is not None:
        _sink.flush()


atexit.register(flush)
