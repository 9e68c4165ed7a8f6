"""The ZeroMQ transport both ends share: where the daemon listens by default (an ``ipc://`` socket in
the runtime directory) and a cheap readiness check of a socket."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import zmq


def default_runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$LLMSERVER_RUNTIME_DIR``, else ``/run/llmserver`` when writable, else ``./data/run``."""
    env = os.environ if env is None else env
    if env.get("LLMSERVER_RUNTIME_DIR"):
        return Path(env["LLMSERVER_RUNTIME_DIR"])
    system = Path("/run/llmserver")
    if system.is_dir() and os.access(system, os.W_OK):
        return system
    return Path("data/run")


def default_endpoint(env: Mapping[str, str] | None = None) -> str:
    return f"ipc://{default_runtime_dir(env).absolute()}/runtime.sock"


def readable(sock: zmq.Socket[Any]) -> bool:
    """A message is waiting (ZMQ_EVENTS; cheaper than a NOBLOCK receive that raises ``Again``)."""
    return bool(cast(int, sock.get(zmq.EVENTS)) & zmq.POLLIN)
