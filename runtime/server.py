"""The daemon's ZeroMQ server: a ROUTER for clients, a PULL for worker output.

One thread (the caller of ``serve``) owns both sockets. Workers push their
frames over ``inproc://``; the loop drains them, merges consecutive deltas of
one request into one frame (the busier it gets, the more it coalesces), and
sends them on. A client whose identity is gone (ROUTER_MANDATORY) has its work
aborted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from runtime import __version__
from runtime.backend import ModelConfig
from runtime.errors import ModelSpecError
from runtime.manager import BusyError, Job, ModelManager, ModelWorker
from runtime.modelspec import check_model_name, model_config_from_wire
from runtime.protocol import (
    ERR_ABORTED,
    ERR_BAD_REQUEST,
    ERR_DEADLINE,
    ERR_LOAD_FAILED,
    ERR_SHUTTING_DOWN,
    ERR_UNKNOWN_MODEL,
    PROTOCOL_VERSION,
    ProtocolError,
    Reply,
    Request,
    decode_request,
    encode_reply,
    parse_generate,
)
from runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

_DRAIN = 512


class _PushOutbox:
    """Workers' side of the inproc pipe; one PUSH socket per thread."""

    def __init__(self, ctx: zmq.Context[Any], address: str) -> None:
        self._ctx, self._address, self._local = ctx, address, threading.local()

    def _sock(self) -> zmq.Socket[Any]:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self._address)
            self._local.sock = sock
        return sock

    def delta(self, identity: bytes, rid: str, text: str) -> None:
        self._sock().send_multipart([identity, rid.encode(), b"d", text.encode("utf-8")])

    def frame(self, identity: bytes, rid: str, kind: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self._sock().send_multipart([identity, rid.encode(), kind.encode(), payload])

    def close(self) -> None:
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close(0)


class RuntimeServer:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.boot_id = uuid.uuid4().hex
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._inproc = f"inproc://outbox-{self.boot_id}"
        self._outbox = _PushOutbox(self._ctx, self._inproc)
        self.manager = ModelManager(settings.queue_depth, self._outbox)
        self._stopping = False
        self._pending_loads: dict[str, tuple[bytes, str]] = {}
        self._router: zmq.Socket[Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def bind(self) -> None:
        endpoint = self.settings.endpoint
        if endpoint.startswith("ipc://"):
            path = Path(endpoint[len("ipc://") :])
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.unlink()
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.bind(self._inproc)
        router = self._ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.SNDHWM, 100_000)
        router.setsockopt(zmq.RCVHWM, 100_000)
        router.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        router.bind(endpoint)
        self._router = router
        log.info("runtime %s listening on %s (pid %d)", __version__, endpoint, os.getpid())

    def preload(self, configs: list[ModelConfig]) -> None:
        for config in configs:
            self.manager.load(config, self._loaded)

    def request_stop(self, *_: Any) -> None:
        self._stopping = True

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then drain within the grace period and close."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._pull, zmq.POLLIN)
        next_sweep = 0.0
        while not self._stopping:
            self._poll_once(poller, 100)
            now = time.monotonic()
            if now >= next_sweep:
                self._expire_queued()
                next_sweep = now + 0.05
        self._shutdown(poller)

    def _expire_queued(self) -> None:
        for job in self.manager.expire():
            self.manager.finished(job.rid)
            self._error(job.identity, job.rid, ERR_DEADLINE, "deadline passed in the queue")

    def _poll_once(self, poller: zmq.Poller, timeout_ms: int) -> None:
        events = dict(poller.poll(timeout_ms))
        if self._pull in events:
            self._forward_outbox()
        if self._router in events:
            self._read_requests()

    def _shutdown(self, poller: zmq.Poller) -> None:
        log.info("stopping: %d request(s) in flight", self.manager.active_jobs())
        limit = time.monotonic() + self.settings.grace_seconds
        while self.manager.active_jobs() and time.monotonic() < limit:
            self._poll_once(poller, 50)
        self.manager.abort_all()
        workers = self.manager.workers()
        for worker in workers:
            worker.stop()
        end = time.monotonic() + 5
        while any(w.state not in ("unloaded", "failed") for w in workers) and time.monotonic() < end:
            self._poll_once(poller, 20)
        for worker in workers:
            worker.join(max(0.0, end - time.monotonic()))
        self._forward_outbox()
        self.close()
        log.info("stopped")

    def close(self) -> None:
        self._outbox.close()
        if self._router is not None:
            self._router.close(0)
        self._pull.close(0)
        self._ctx.term()
        endpoint = self.settings.endpoint
        if endpoint.startswith("ipc://"):
            Path(endpoint[len("ipc://") :]).unlink(missing_ok=True)

    # -- outbound --------------------------------------------------------------------------

    def _forward_outbox(self) -> None:
        batch: list[list[Any]] = []
        open_delta: dict[bytes, list[Any]] = {}
        for _ in range(_DRAIN):
            try:
                identity, rid, kind, payload = self._pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if kind == b"d":
                item = open_delta.get(rid)
                if item is not None:
                    item[3].append(payload)
                    continue
                item = [identity, rid, kind, [payload]]
                open_delta[rid] = item
            else:
                open_delta.pop(rid, None)
                item = [identity, rid, kind, payload]
            batch.append(item)
        for identity, rid, kind, payload in batch:
            self._send_out(identity, rid.decode(), kind, payload)

    def _send_out(self, identity: bytes, rid: str, kind: bytes, payload: Any) -> None:
        if kind == b"d":
            text = b"".join(payload).decode("utf-8")
            frame = b'{"v":%d,"id":%s,"type":"delta","text":%s}' % (
                PROTOCOL_VERSION,
                json.dumps(rid).encode(),
                json.dumps(text).encode(),
            )
        else:
            body = json.loads(payload)
            if kind in (b"done", b"error"):
                self.manager.finished(rid)
            if kind == b"loaded":
                self._pending_loads.pop(rid, None)
                kind = b"result" if body.get("state") == "ready" else b"error"
                if kind == b"error":
                    body = {"code": ERR_LOAD_FAILED, "message": body.get("error", ""), "model": body}
            frame = encode_reply(Reply(rid, kind.decode(), body))
        self._send(identity, frame, rid)

    def _send(self, identity: bytes, frame: bytes, rid: str = "") -> None:
        assert self._router is not None
        try:
            self._router.send_multipart([identity, frame], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                n = self.manager.abort_identity(identity)
                if n:
                    log.info("client went away; aborted %d request(s)", n)
            else:
                raise

    def _reply(self, identity: bytes, rid: str, kind: str, body: dict[str, Any]) -> None:
        self._send(identity, encode_reply(Reply(rid, kind, body)), rid)

    def _error(self, identity: bytes, rid: str, code: str, message: str) -> None:
        self._reply(identity, rid, "error", {"code": code, "message": message})

    # -- inbound ---------------------------------------------------------------------------

    def _read_requests(self) -> None:
        assert self._router is not None
        for _ in range(_DRAIN):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                log.warning("dropping a message of %d frames", len(frames))
                continue
            self._handle(frames[0], frames[1])

    def _handle(self, identity: bytes, frame: bytes) -> None:
        try:
            req = decode_request(frame)
        except ProtocolError as exc:
            self._error(identity, _guess_id(frame), ERR_BAD_REQUEST, str(exc))
            return
        if self._stopping and req.op not in ("ping", "hello", "abort"):
            self._error(identity, req.id, ERR_SHUTTING_DOWN, "the runtime is shutting down")
            return
        if req.op != "abort" and time.time() > req.deadline:
            self._error(identity, req.id, ERR_DEADLINE, "deadline passed before the request arrived")
            return
        log.debug("request %s %s", req.op, req.id)
        handler = getattr(self, f"_op_{req.op}")
        try:
            handler(identity, req)
        except (ProtocolError, ModelSpecError) as exc:
            self._error(identity, req.id, ERR_BAD_REQUEST, str(exc))

    def _op_ping(self, identity: bytes, req: Request) -> None:
        rid = req.id
        self._reply(identity, rid, "result", {"pong": True, "boot_id": self.boot_id})

    def _op_hello(self, identity: bytes, req: Request) -> None:
        rid = req.id
        self._reply(
            identity,
            rid,
            "result",
            {
                "protocol": PROTOCOL_VERSION,
                "version": __version__,
                "boot_id": self.boot_id,
                "pid": os.getpid(),
                "models": self.manager.describe(),
            },
        )

    def _op_models(self, identity: bytes, req: Request) -> None:
        rid = req.id
        self._reply(identity, rid, "result", {"models": self.manager.describe()})

    def _op_load(self, identity: bytes, req: Request) -> None:
        rid, body = req.id, req.body
        config = model_config_from_wire(body)
        previous = self._pending_loads.get(config.name)
        self._pending_loads[config.name] = (identity, rid)  # before the worker can finish
        try:
            self.manager.load(config, self._loaded)
        except BusyError as exc:
            if previous is None:
                self._pending_loads.pop(config.name, None)
            else:
                self._pending_loads[config.name] = previous
            self._error(identity, rid, ERR_LOAD_FAILED, str(exc))

    def _loaded(self, worker: ModelWorker) -> None:
        """Runs on the worker's thread when its load ends; reply through the outbox."""
        info = worker.describe()
        if worker.state == "failed":
            log.error("model %s failed to load: %s", worker.config.name, worker.error)
        else:
            log.info("model %s ready (%s)", worker.config.name, worker.config.backend)
        waiter = self._pending_loads.get(worker.config.name)
        if waiter is not None:
            self._outbox.frame(waiter[0], waiter[1], "loaded", info)

    def _op_unload(self, identity: bytes, req: Request) -> None:
        rid, body = req.id, req.body
        name = check_model_name(body.get("name"))
        try:
            self.manager.unload(name)
        except KeyError:
            self._error(identity, rid, ERR_UNKNOWN_MODEL, f"model {name!r} is not loaded")
            return
        self._reply(identity, rid, "result", {"name": name, "state": "unloading"})

    def _op_abort(self, identity: bytes, req: Request) -> None:
        target = req.body.get("target")
        if not isinstance(target, str):
            raise ProtocolError("'target' must be the id of the request to abort")
        dropped = self.manager.abort(target)
        if dropped is not None:
            self._error(dropped.identity, dropped.rid, ERR_ABORTED, "aborted before it ran")

    def _op_generate(self, identity: bytes, req: Request) -> None:
        rid, body = req.id, req.body
        spec = parse_generate(body)
        job = Job(rid=rid, identity=identity, spec=spec, deadline=req.deadline)
        try:
            position = self.manager.submit(job)
        except KeyError:
            self._reply(identity, rid, "error", self.manager.unknown(spec.model))
            return
        except BusyError as exc:
            self._reply(identity, rid, "error", self.manager.busy(exc))
            return
        self._reply(identity, rid, "accepted", {"position": position})


def _guess_id(frame: bytes) -> str:
    try:
        obj = json.loads(frame)
        rid = obj.get("id") if isinstance(obj, dict) else None
        return rid if isinstance(rid, str) else ""
    except ValueError:
        return ""
