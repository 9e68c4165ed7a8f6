"""Who, if anyone, already answers on an ``ipc://`` endpoint (before a daemon takes it over).

Binding a ZeroMQ ``ipc://`` endpoint means unlinking the socket file a daemon that was killed left
behind. Unlinking it while another daemon still listens there steals the name: the old daemon lives
on unseen, still holding its models (issue 25, an orphan of ``llmserver up`` killed with SIGKILL).
:func:`probe_endpoint` tells the cases apart, quickly:

1. no file, or a file nobody listens on (a plain ``connect`` is refused at once): free;
2. something accepts the connection: it is asked ``hello`` over ZeroMQ with a short timeout, and a
   runtime daemon answers with its pid; a listener that does not answer is still a live process.

``tcp://`` endpoints need no probe: binding a port that is taken fails by itself.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from runtime.api.protocol import ProtocolError, Request, decode_reply, encode_request

PROBE_TIMEOUT = 1.0  # seconds a live listener has to answer hello


@dataclass(frozen=True)
class Listener:
    """A live process on the endpoint; ``pid`` when it answered as a runtime daemon."""

    endpoint: str
    pid: int | None

    def refusal(self) -> str:
        """The one sentence a daemon (or ``llmserver up``) says when it will not take the endpoint."""
        if self.pid:
            who = f"another runtime daemon (pid {self.pid}) already answers on {self.endpoint}"
        else:
            who = f"another process already listens on {self.endpoint} (it does not answer as a runtime daemon)"
        return f"{who}: stop it first, or set another LLMSERVER_RUNTIME_ENDPOINT"


def probe_endpoint(endpoint: str, timeout: float = PROBE_TIMEOUT) -> Listener | None:
    """The live process that listens on ``endpoint``, or None when nothing does (or it is ``tcp://``)."""
    if not endpoint.startswith("ipc://"):
        return None
    path = endpoint[len("ipc://") :]
    if path.startswith("@") or not _accepts(Path(path)):
        return None
    return Listener(endpoint, _hello_pid(endpoint, timeout))


def _accepts(path: Path) -> bool:
    """Whether a process accepts connections on the unix socket ``path`` (refused at once when none)."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:  # refused (a file left by a killed daemon), not a socket, no permission
            return False
    return True


def _hello_pid(endpoint: str, timeout: float) -> int | None:
    """The pid a runtime daemon on ``endpoint`` gives in its ``hello``; None if no daemon answers."""
    ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        rid = f"probe-{os.getpid()}-{os.urandom(3).hex()}"
        sock.send(encode_request(Request(rid, "hello", time.time() + timeout, {})))
        if not sock.poll(int(timeout * 1000)):
            return None
        with contextlib.suppress(ProtocolError):
            reply = decode_reply(sock.recv(zmq.NOBLOCK))
            pid = reply.body.get("pid")
            if reply.id == rid and isinstance(pid, int):
                return pid
        return None
    finally:
        ctx.destroy(linger=0)
