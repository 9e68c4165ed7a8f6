"""The asyncio client of the runtime daemon, for the proxy and the admin UI.

Many concurrent requests share one DEALER socket; a reader task routes each
reply to its request by id. The socket is ``IMMEDIATE`` (nothing is queued for
a daemon that is not connected, so nothing replays later) and a monitor fails
every request in flight the moment the connection drops, so a daemon that dies
mid-stream is a ``RuntimeUnavailableError`` within a heartbeat, never a hang.
A restarted daemon is reconnected to by ZeroMQ on its own.

Usage::

    async with RuntimeClient(endpoint) as client:
        async with client.generate("smollm2", messages=[...]) as stream:
            async for text in stream:
                ...
        print(stream.done.completion_tokens)

The stream is :class:`runtime.api.stream.GenerateStream`; each request's replies wait in an
:class:`runtime.api.inbox.Inbox`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from runtime.api.errors import RuntimeUnavailableError
from runtime.api.inbox import GONE, Inbox, as_error
from runtime.api.models import ModelConfig
from runtime.api.output import OutputSpec, output_to_wire
from runtime.api.protocol import ProtocolError, Request, SamplingParams, decode_reply, encode_request, params_to_wire
from runtime.api.state import Hello, ModelState
from runtime.api.stream import GenerateStream
from runtime.api.transport import readable

log = logging.getLogger(__name__)


class RuntimeClient:
    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 10.0,
        connect_wait: float = 1.0,
        heartbeat_ms: int = 500,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.connect_wait = connect_wait
        self._heartbeat_ms = heartbeat_ms
        self._ids = itertools.count()
        self._prefix = f"{os.getpid():x}-{os.urandom(3).hex()}-"
        self._pending: dict[str, Inbox] = {}
        self._connected = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None

    async def __aenter__(self) -> RuntimeClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        for opt, value in (
            (zmq.LINGER, 0),
            (zmq.IMMEDIATE, 1),
            (zmq.RECONNECT_IVL, 100),
            (zmq.RECONNECT_IVL_MAX, 500),
            (zmq.HEARTBEAT_IVL, self._heartbeat_ms),
            (zmq.HEARTBEAT_TIMEOUT, self._heartbeat_ms * 3),
            (zmq.SNDHWM, 100_000),
            (zmq.RCVHWM, 100_000),
        ):
            sock.setsockopt(opt, value)
        monitor = sock.get_monitor_socket()
        sock.connect(self.endpoint)
        self._ctx, self._sock, self._monitor = ctx, sock, monitor
        # Plain sockets read from the event loop's own callbacks: each reply costs no task switch.
        self._loop = loop = asyncio.get_running_loop()
        loop.add_reader(sock, self._drain)
        loop.add_reader(monitor, self._drain_monitor)
        self._drain()
        self._drain_monitor()
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_wait)
        except asyncio.TimeoutError:
            log.warning("runtime at %s not reachable yet; will keep trying", self.endpoint)

    async def close(self) -> None:
        sock, monitor, loop = self._sock, self._monitor, self._loop
        if sock is None or monitor is None or loop is None:
            return
        self._sock = self._monitor = None
        loop.remove_reader(sock)
        loop.remove_reader(monitor)
        # Stop the monitor while its PAIR socket is still open: stopping it after that blocks.
        sock.disable_monitor()
        monitor.close(0)
        self._fail_all()
        sock.close(0)
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- reading (event loop callbacks) ------------------------------------------------------
    # ZMQ_FD is edge-triggered and any operation on the socket may consume its signal, so every
    # drain reads until ZMQ_EVENTS says nothing is left, and every send is followed by a drain.

    def _drain(self) -> None:
        sock = self._sock
        while sock is not None and readable(sock):
            for frame in sock.recv_multipart(zmq.NOBLOCK):  # the daemon batches frames per client
                try:
                    reply = decode_reply(frame)
                except ProtocolError as exc:
                    log.warning("bad frame from runtime: %s", exc)
                    continue
                inbox = self._pending.get(reply.id)
                if inbox is not None:
                    inbox.put(reply)

    def _drain_monitor(self) -> None:
        monitor = self._monitor
        while monitor is not None and readable(monitor):
            event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected.set()
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._connected.clear()
                self._fail_all()

    def _fail_all(self) -> None:
        for inbox in self._pending.values():
            inbox.put(GONE)

    # -- requests ---------------------------------------------------------------------------

    def new_id(self) -> str:
        """A request id no other request of this client has."""
        return f"{self._prefix}{next(self._ids)}"

    async def _send(self, req: Request) -> None:
        frame = [encode_request(req), req.payload] if req.payload else [encode_request(req)]
        if self._try_send(frame):
            return
        # Not connected: wait a little (a restarting daemon), never longer than the deadline.
        end = time.monotonic() + min(self.connect_wait, max(0.0, req.deadline - time.time()))
        while time.monotonic() < end:
            try:
                await asyncio.wait_for(self._connected.wait(), end - time.monotonic())
            except asyncio.TimeoutError:
                break
            if self._try_send(frame):
                return
            await asyncio.sleep(0.005)
        raise RuntimeUnavailableError(f"runtime daemon not reachable at {self.endpoint}")

    def _try_send(self, frame: list[bytes]) -> bool:
        if self._sock is None:
            raise RuntimeUnavailableError("the runtime client is closed")
        try:
            self._sock.send_multipart(frame, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False
        finally:
            self._drain()

    async def open(self, req: Request) -> Inbox:
        """Register the inbox of ``req``, then send it (so no reply can arrive before its inbox)."""
        inbox = self._pending[req.id] = Inbox(req.deadline, req.op)
        try:
            await self._send(req)
        except BaseException:
            self.release(req.id)
            raise
        return inbox

    def release(self, rid: str) -> None:
        """Forget the request ``rid`` and stop its deadline timer."""
        inbox = self._pending.pop(rid, None)
        if inbox is not None:
            inbox.close()

    async def call(self, op: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Send one request and wait for its ``result``."""
        timeout = self.timeout if timeout is None else timeout
        req = Request(self.new_id(), op, time.time() + timeout, body or {})
        inbox = await self.open(req)
        try:
            reply = await inbox.get()
        finally:
            self.release(req.id)
        if reply.type == "result":
            return reply.body
        raise as_error(reply)

    async def ping(self, timeout: float = 1.0) -> dict[str, Any]:
        return await self.call("ping", timeout=timeout)

    async def hello(self) -> Hello:
        return Hello.from_wire(await self.call("hello"))

    async def models(self) -> list[ModelState]:
        return [ModelState.from_wire(m) for m in (await self.call("models"))["models"]]

    async def load(self, config: ModelConfig, timeout: float = 300.0) -> ModelState:
        """Load ``config``'s model; its state once ready (a failed load raises the daemon's error)."""
        return ModelState.from_wire(await self.call("load", config.to_wire(), timeout=timeout))

    async def unload(self, name: str) -> None:
        """Start unloading ``name`` (its queued requests fail; the daemon lists it as unloading)."""
        await self.call("unload", {"name": name})

    def generate(
        self,
        model: str,
        *,
        messages: list[dict[str, Any]] | None = None,
        prompt: str | None = None,
        params: SamplingParams | None = None,
        output: OutputSpec | None = None,
        timeout: float = 300.0,
    ) -> GenerateStream:
        body: dict[str, Any] = {"model": model, "params": params_to_wire(params or SamplingParams())}
        if output is not None and not output.plain:
            body["output"] = output_to_wire(output)
        if messages is not None:
            body["messages"] = messages
        if prompt is not None:
            body["prompt"] = prompt
        req = Request(self.new_id(), "generate", time.time() + timeout, body)
        return GenerateStream(self, req)

    async def embed(self, model: str, inputs: list[str], timeout: float = 300.0) -> dict[str, Any]:
        """Embeddings of ``inputs`` (one vector each) and the model's prompt token count."""
        return await self.call("embed", {"model": model, "input": inputs}, timeout=timeout)

    async def tokenize(self, model: str, content: str, add_special: bool = True) -> list[int]:
        body = {"model": model, "content": content, "add_special": add_special}
        return list((await self.call("tokenize", body))["tokens"])

    async def detokenize(self, model: str, tokens: list[int]) -> str:
        return str((await self.call("detokenize", {"model": model, "tokens": tokens}))["content"])

    async def abort(self, rid: str) -> None:
        req = Request(self.new_id(), "abort", time.time() + 5, {"target": rid})
        try:
            await self._send(req)
        except RuntimeUnavailableError:
            pass  # the daemon is gone, so is the work
