"""The daemon's ZeroMQ server: one ROUTER for every client.

The caller of ``serve`` (the main thread) reads requests and answers the quick
ones; model workers send their requests' text and end frames themselves,
through the same ROUTER under a lock (``runtime.daemon.socket``), and so does the
tokenizer pool (``runtime.daemon.tokenizer``): nothing whose cost grows with its
input runs on the main thread, which must keep answering ``ping``. A client whose
identity is gone (ROUTER_MANDATORY) has its work aborted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from runtime import __version__
from runtime.api.audio import SpeakSpec, TranscribeSpec, parse_speak, parse_transcribe
from runtime.api.errors import ModelSpecError, RuntimeServiceError
from runtime.api.models import ModelConfig, check_model_name, model_config_from_wire
from runtime.api.probe import probe_endpoint
from runtime.api.protocol import (
    ERR_ABORTED,
    ERR_BAD_REQUEST,
    ERR_DEADLINE,
    ERR_LOAD_FAILED,
    ERR_SHUTTING_DOWN,
    ERR_UNKNOWN_MODEL,
    PROTOCOL_VERSION,
    EmbedSpec,
    GenerateSpec,
    ProtocolError,
    Request,
    decode_request,
    parse_embed,
    parse_generate,
)
from runtime.backends.base import BackendError
from runtime.daemon.errors import BusyError
from runtime.daemon.job import Job
from runtime.daemon.manager import ModelManager
from runtime.daemon.settings import RuntimeSettings
from runtime.daemon.socket import RouterOutbox, SharedRouter
from runtime.daemon.tokenizer import TokenizerPool
from runtime.daemon.worker import ModelWorker, WorkerOptions

log = logging.getLogger(__name__)

_DRAIN = 512


class RuntimeServer:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.boot_id = uuid.uuid4().hex
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._stopping = False
        self.on_stop: list[Callable[[], object]] = []  # called once, when a stop is first requested
        self._pending_loads: dict[str, tuple[bytes, str]] = {}
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.SNDHWM, 100_000)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        self._sock = sock
        self._router = SharedRouter(sock)
        self._outbox = RouterOutbox(self._router, lambda rid: self.manager.finished(rid), self._client_gone)
        options = WorkerOptions(settings.queue_depth, settings.stream_interval_ms / 1000, settings.compute_nice)
        self.manager = ModelManager(options, self._outbox)
        self._tokenizers = TokenizerPool()

    # -- lifecycle -------------------------------------------------------------------------

    def bind(self) -> None:
        """Listen on the endpoint; refuse (RuntimeServiceError) one another live process answers on."""
        endpoint = self.settings.endpoint
        if endpoint.startswith("ipc://"):
            other = probe_endpoint(endpoint)
            if other is not None:
                raise RuntimeServiceError(other.refusal())
            path = Path(endpoint[len("ipc://") :])
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():  # left by a daemon that was killed: nobody listens on it
                path.unlink()
        self._sock.bind(endpoint)
        log.info("runtime %s listening on %s (pid %d)", __version__, endpoint, os.getpid())

    def preload(self, configs: list[ModelConfig]) -> None:
        for config in configs:
            self.manager.load(config, self._loaded)

    def request_stop(self, *_: Any) -> None:
        if not self._stopping:
            for callback in self.on_stop:
                callback()
        self._stopping = True

    @property
    def stopping(self) -> bool:
        """True once SIGTERM/SIGINT (or :meth:`request_stop`) asked the daemon to stop."""
        return self._stopping

    def serve(self) -> None:
        """Run until SIGTERM/SIGINT, then drain within the grace period and close."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        next_sweep = 0.0
        while not self._stopping:
            self._poll_once(50)
            now = time.monotonic()
            if now >= next_sweep:
                self._expire_queued()
                next_sweep = now + 0.05
        self._shutdown()

    def _expire_queued(self) -> None:
        for job in self.manager.expire():
            self.manager.finished(job.rid)
            self._error(job.identity, job.rid, ERR_DEADLINE, "deadline passed in the queue")

    def _poll_once(self, timeout_ms: int) -> None:
        self._router.wait(timeout_ms)
        self._read_requests()

    def _shutdown(self) -> None:
        log.info("stopping: %d request(s) in flight", self.manager.active_jobs())
        limit = time.monotonic() + self.settings.grace_seconds
        while self.manager.active_jobs() and time.monotonic() < limit:
            self._poll_once(50)
        self.manager.abort_all()
        self._tokenizers.close()
        workers = self.manager.workers()
        for worker in workers:
            worker.stop()
        end = time.monotonic() + 5
        while any(w.state not in ("unloaded", "failed") for w in workers) and time.monotonic() < end:
            self._poll_once(20)
        for worker in workers:
            worker.join(max(0.0, end - time.monotonic()))
        self.close()
        log.info("stopped")

    def close(self) -> None:
        self._router.close()
        self._ctx.term()
        endpoint = self.settings.endpoint
        if endpoint.startswith("ipc://"):
            Path(endpoint[len("ipc://") :]).unlink(missing_ok=True)

    # -- outbound --------------------------------------------------------------------------

    def _client_gone(self, identity: bytes) -> None:
        n = self.manager.abort_identity(identity)
        if n:
            log.info("client went away; aborted %d request(s)", n)

    def _reply(self, identity: bytes, rid: str, kind: str, body: dict[str, Any]) -> None:
        self._outbox.reply(identity, rid, kind, body)

    def _error(self, identity: bytes, rid: str, code: str, message: str) -> None:
        self._reply(identity, rid, "error", {"code": code, "message": message})

    # -- inbound ---------------------------------------------------------------------------

    def _read_requests(self) -> None:
        for _ in range(_DRAIN):
            frames = self._router.recv()
            if frames is None:
                return
            if len(frames) not in (2, 3):  # identity, request and its optional payload (issue 23)
                log.warning("dropping a message of %d frames", len(frames))
                continue
            self._handle(frames[0], frames[1], frames[2] if len(frames) == 3 else b"")

    def _handle(self, identity: bytes, frame: bytes, payload: bytes = b"") -> None:
        try:
            req = decode_request(frame, payload)
        except ProtocolError as exc:
            self._error(identity, _guess_id(frame), exc.code, str(exc))
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
                "active": self.manager.active_jobs(),
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
        waiter = self._pending_loads.pop(worker.config.name, None)
        if waiter is None:
            return
        if worker.state == "ready":
            self._reply(waiter[0], waiter[1], "result", info)
        else:
            failed = {"code": ERR_LOAD_FAILED, "message": worker.error, "model": info}
            self._reply(waiter[0], waiter[1], "error", failed)

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

    def _op_embed(self, identity: bytes, req: Request) -> None:
        """Queued on the model's worker like a generation; answered with one ``result``."""
        self._queue(identity, req, parse_embed(req.body))

    def _op_speak(self, identity: bytes, req: Request) -> None:
        """Streamed like a generation: ``accepted``, one ``audio`` per sentence, ``done`` (issue 23)."""
        self._queue(identity, req, parse_speak(req.body))

    def _op_transcribe(self, identity: bytes, req: Request) -> None:
        """Queued like an ``embed``; the audio file is the message's payload frame (issue 23)."""
        self._queue(identity, req, parse_transcribe(req.body, req.payload))

    def _op_tokenize(self, identity: bytes, req: Request) -> None:
        content, add_special = req.body.get("content"), req.body.get("add_special", True)
        if not isinstance(content, str) or not isinstance(add_special, bool):
            raise ProtocolError("'content' must be a string and 'add_special' a boolean")
        self._with_tokenizer(identity, req, lambda w: {"tokens": w.tokenize(content, add_special)})

    def _op_detokenize(self, identity: bytes, req: Request) -> None:
        tokens = req.body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise ProtocolError("'tokens' must be a list of integers")
        self._with_tokenizer(identity, req, lambda w: {"content": w.detokenize(tokens)})

    def _with_tokenizer(self, identity: bytes, req: Request, work: Callable[[ModelWorker], dict[str, Any]]) -> None:
        """Run ``work`` with the model's worker in the tokenizer pool (never on this thread)."""
        name = req.body.get("model")
        worker = self.manager.worker(name) if isinstance(name, str) else None
        if worker is None:
            self._reply(identity, req.id, "error", self.manager.unknown(str(name)))
            return
        rid = req.id
        self._tokenizers.submit(
            lambda: work(worker), req.deadline, lambda kind, body: self._reply(identity, rid, kind, body)
        )

    def _op_generate(self, identity: bytes, req: Request) -> None:
        self._queue(identity, req, parse_generate(req.body))

    def _queue(
        self, identity: bytes, req: Request, spec: GenerateSpec | EmbedSpec | SpeakSpec | TranscribeSpec
    ) -> None:
        """Queue a job on its model's worker; a streamed one (generate, speak) is told its position."""
        job = Job(rid=req.id, identity=identity, spec=spec, deadline=req.deadline)
        try:
            position = self.manager.submit(job)
        except KeyError:
            self._reply(identity, req.id, "error", self.manager.unknown(spec.model))
            return
        except BusyError as exc:
            self._reply(identity, req.id, "error", self.manager.busy(exc))
            return
        except BackendError as exc:  # a request the model cannot serve (an unknown voice...)
            self._reply(identity, req.id, "error", exc.frame())
            return
        if isinstance(spec, (GenerateSpec, SpeakSpec)):
            self._reply(identity, req.id, "accepted", {"position": position})


def _guess_id(frame: bytes) -> str:
    try:
        obj = json.loads(frame)
        rid = obj.get("id") if isinstance(obj, dict) else None
        return rid if isinstance(rid, str) else ""
    except ValueError:
        return ""
