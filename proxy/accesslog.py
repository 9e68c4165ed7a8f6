"""One structured log line per request: request id, key id, model, status, tokens, latency, TTFT.

A text generation is logged from the one place its usage row is written
(``proxy.metering.generation.Generation._record``, through :func:`log_generation`), so the line
and the ledger always agree; every other request (models, health, refusals before a generation
began) is logged by :func:`access_log_middleware`. The middleware puts an :class:`AccessEntry` in
a context variable for the request; a generation marks it logged, so no request is logged twice
(the generation's row is written in a task of its own, which shares the entry through the copied
context).

The line's fields travel as ``extra={"fields": ...}``: the JSON formatter of
``llmserver.logging`` (``LLMSERVER_LOG_FORMAT=json``) writes them as JSON keys; the text format
shows the message, which holds the same values. Nothing here ever sees a key's secret: the key
appears as its numeric id, the URL as its path without the query string.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import Any

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
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "key_id": key_id,
        "model": model,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "latency_ms": round(latency_ms, 1),
        "ttft_ms": None if ttft_ms is None else round(ttft_ms, 1),
        "client_request_id": client_request_id,
    }
    entry = _current.get()
    if entry is not None:
        entry.logged = True
    log.log(logging.DEBUG if quiet else logging.INFO, _text(fields), extra={"fields": fields})


def _text(fields: dict[str, Any]) -> str:
    parts = [f"{fields['method']} {fields['path']} {fields['status']}", f"request={fields['request_id']}"]
    for name in ("key_id", "model", "prompt_tokens", "completion_tokens", "latency_ms", "ttft_ms"):
        if fields[name] is not None:
            parts.append(f"{name}={fields[name]}")
    return " ".join(parts)
