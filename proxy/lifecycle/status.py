"""What the console shows of a model beside its row (issue 19): the actions that fit its state, its
size on disk, the memory it holds when loaded, and its error cut to fit a table.

:func:`actions_for` is the one table of which action fits which state: the Models page shows only
those buttons, its live refresh hides and shows them as the state moves (``actions`` in the JSON
API's answer), and a form posted from a stale page for an action that no longer fits is refused
with the reason (:func:`unfit`). ``retry`` is ``start`` for a model whose load failed.

The memory figure is the runtime's (``memory_bytes`` in its ``models`` answer, where the backend
can say: llama.cpp's weights plus its K/V cache); the size on disk is the download's, or the local
file's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from proxy.storage.models import ModelRecord

ACTIONS = ("pull", "cancel", "start", "retry", "stop", "test")
SHORT_ERROR = 80  # characters of an error shown in the table; the whole one is a click away
LOADED = ("running", "idle")  # idle: unloaded for its keep-alive, loaded again on the next request


def actions_for(record: ModelRecord) -> tuple[str, ...]:
    """The actions that make sense for the model's state, in the order of the buttons."""
    downloading = record.download_state == "downloading"
    wanted = record.desired_state == "running" or record.start_when_downloaded
    startable = record.kind != "llm" or (bool(record.local_path) and not downloading)
    fits = {
        "pull": record.kind == "llm" and bool(record.source_repo) and not downloading and not _on_disk(record),
        "cancel": downloading,
        "start": not wanted and startable,
        "retry": record.desired_state == "running" and record.actual_state == "failed" and startable,
        "stop": wanted,
        "test": record.kind == "llm" and record.desired_state == "running" and record.actual_state in LOADED,
    }
    return tuple(action for action in ACTIONS if fits[action])


def unfit(record: ModelRecord, action: str) -> str | None:
    """Why ``action`` does not fit the model's state now (None when it does)."""
    if action not in ACTIONS or action in actions_for(record):
        return None
    name = record.name
    if action == "cancel":
        return f"no download of {name!r} is running"
    if action in ("start", "retry") and record.download_state == "downloading":
        return f"model {name!r} is downloading: it can start once its download is done"
    if action == "pull":
        return f"model {name!r} has nothing to download now ({record.download_state})"
    if action == "test":
        return f"model {name!r} is not loaded ({record.actual_state}): start it first"
    wanted = "running" if record.desired_state == "running" else "stopped"
    return f"model {name!r} is already wanted {wanted} ({record.actual_state} now)"


def disk_bytes(record: ModelRecord) -> int | None:
    """The model's files on disk: what its download fetched, or its local file's size."""
    if record.size_bytes:
        return record.size_bytes
    if record.local_path:
        try:
            return os.stat(record.local_path).st_size
        except OSError:
            return None
    return None


def short_error(error: str | None) -> str:
    """The error's first line, at most ``SHORT_ERROR`` characters ("…" when cut)."""
    if not error:
        return ""
    first = error.strip().splitlines()[0] if error.strip() else ""
    if len(first) > SHORT_ERROR or first != error.strip():
        return first[: SHORT_ERROR - 1].rstrip() + "…"
    return first


def model_status(record: ModelRecord, loaded: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The row as JSON with what the console adds: ``actions``, ``disk_bytes``, ``memory_bytes``
    (None when not loaded or not known) and ``error_short``."""
    data = record.to_json()
    info = (loaded or {}).get(record.name) or {}
    memory = info.get("memory_bytes") if info.get("state") == "ready" else None
    data.update(
        actions=list(actions_for(record)),
        disk_bytes=disk_bytes(record),
        memory_bytes=memory if isinstance(memory, int) and not isinstance(memory, bool) else None,
        error_short=short_error(record.error),
    )
    return data


def _on_disk(record: ModelRecord) -> bool:
    path = record.local_path
    return record.download_state in ("done", "local") and path is not None and os.path.exists(path)
