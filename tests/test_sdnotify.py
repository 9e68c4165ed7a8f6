"""systemd's notify protocol, for real: each service started with a NOTIFY_SOCKET this test listens on.

Issue 13: ``READY=1`` only after the service answers requests, ``WATCHDOG=1`` while its health
check passes, none once it fails (the proxy's database gone), ``STOPPING=1`` at SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from llmserver.supervision.sdnotify import Notifier
from tests.harness import Daemon, Proxy, demo_spec

WATCHDOG_USEC = "600000"  # 0.6 s: the services send WATCHDOG=1 every 0.3 s


class Listener:
    """The systemd side: a datagram socket collecting (time, {key: value}) messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, dict[str, str]]] = []

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": WATCHDOG_USEC}

    def collect(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout: float) -> float:
        """When ``key`` first arrived (waiting up to ``timeout`` for it)."""
        end = time.monotonic() + timeout
        while True:
            for at, fields in self.messages:
                if key in fields:
                    return at
            if time.monotonic() >= end:
                raise AssertionError(f"no {key} in {timeout}s; got {[m for _, m in self.messages]}")
            self.collect(0.1)

    def count(self, key: str, since: float) -> int:
        return sum(1 for at, fields in self.messages if at >= since and key in fields)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = Path(f"/tmp/llms-notify-{os.getpid()}-{time.monotonic_ns()}.sock")
    lst = Listener(path)
    yield lst
    lst.close()
    path.unlink(missing_ok=True)


def test_notifier_speaks_to_abstract_sockets_and_respects_watchdog_pid() -> None:
    name = f"llms-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"})
        assert notifier.ready("serving") and notifier.watchdog_interval == 1.0
        assert sock.recv(100) == b"READY=1\nSTATUS=serving"
    other_pid = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(other_pid).watchdog_interval is None
    assert not Notifier.from_env({}).enabled and not Notifier.from_env({}).ready("x")


@pytest.mark.timeout(300)  # a model loads and warms up: slow on a busy machine
def test_the_runtime_is_ready_after_it_answers_and_feeds_its_watchdog(
    make_daemon: type[Daemon], listener: Listener
) -> None:
    daemon = make_daemon("--model", demo_spec(n_threads=2), env=listener.env())  # type: ignore[call-arg]
    daemon.start(ready_models=())  # only the process; READY is the daemon's to say
    ready_at = listener.wait_for("READY", 90)
    statuses = [m.get("STATUS", "") for at, m in listener.messages if at <= ready_at]
    assert any("warming up smollm2" in s for s in statuses), statuses  # the warm-up ran before READY
    out = _chat_on_daemon(daemon.endpoint)
    assert out, "a request right after READY=1 is answered"
    listener.collect(1.5)
    assert listener.count("WATCHDOG", ready_at) >= 3
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    listener.wait_for("STOPPING", 10)
    assert daemon.proc.wait(30) == 0


@pytest.mark.timeout(300)
def test_the_proxy_is_ready_only_when_it_serves_and_starves_its_watchdog_without_a_database(
    make_daemon: type[Daemon], make_proxy: object, listener: Listener
) -> None:
    daemon = make_daemon("--model", demo_spec(n_threads=2))  # type: ignore[call-arg]
    proxy: Proxy = make_proxy(daemon.endpoint, **listener.env())  # type: ignore[operator]
    proxy.start()
    listener.collect(2.0)  # the runtime is not running: the proxy must not say it is ready
    assert listener.count("READY", 0) == 0 and listener.count("WATCHDOG", 0) == 0
    assert any(m.get("STATUS", "").startswith("starting") for _, m in listener.messages)
    daemon.start()
    ready_at = listener.wait_for("READY", 90)
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/readyz", timeout=5) as r:
        assert r.status == 200
    key = proxy.make_key("notify")
    client = OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=120)
    answer = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    client.close()
    listener.collect(1.5)
    assert listener.count("WATCHDOG", ready_at) >= 3

    for suffix in ("", "-wal", "-shm"):  # the database is gone from under the running proxy
        Path(f"{proxy.db_path}{suffix}").unlink(missing_ok=True)
    listener.collect(1.0)  # at most one check that was already under way may still pass
    gone = time.monotonic()
    listener.collect(2.0)
    assert listener.count("WATCHDOG", gone) == 0, "the watchdog is fed while the database is gone"
    assert any("database missing" in m.get("STATUS", "") for at, m in listener.messages if at >= gone)
    assert proxy.proc is not None
    proxy.proc.send_signal(signal.SIGTERM)
    listener.wait_for("STOPPING", 10)
    proxy.proc.wait(30)


def _chat_on_daemon(endpoint: str) -> str:
    import asyncio

    from runtime.api.client import RuntimeClient
    from runtime.api.protocol import SamplingParams

    async def chat() -> str:
        async with RuntimeClient(endpoint) as client:
            async with client.generate(
                "smollm2", messages=[{"role": "user", "content": "Hi"}], params=SamplingParams(max_tokens=3)
            ) as stream:
                return "".join([piece async for piece in stream])

    return asyncio.run(chat())
