"""Issue 25, processes and restarts: through the real processes (``llmserver up`` killed with SIGKILL,
a second ``up`` or daemon on the same endpoint, a runtime restarted with requests in flight)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from proxy.auth.apikey import key_minter
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from runtime.api.client import RuntimeClient
from runtime.api.state import ModelState
from tests.faults.clients import Streamed, stream_chat
from tests.faults.test_runtime_faults import LoggedUp
from tests.harness import ROOT, Daemon, Proxy, clean_env, demo_spec, free_port
from tests.test_up import daemon_pids


def limited_key(db: Path, token_limit: int) -> str:
    """A key with a token limit in ``db``, made as an admin would (another process than the proxy)."""

    async def create() -> str:
        async with Database.open(db) as opened:
            full, _ = await KeyRepository(opened, key_minter()).create_key("limited", token_limit=token_limit)
            return full

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result()


def held(db: Path) -> tuple[int, int]:
    """(reservation rows, tokens reserved over all keys) in ``db``."""
    with sqlite3.connect(db, timeout=10) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM quota_reservations").fetchone()
        (tokens,) = conn.execute("SELECT COALESCE(SUM(tokens_reserved), 0) FROM api_keys").fetchone()
    return int(rows), int(tokens)


def stop_up(up: LoggedUp, cwd: Path) -> None:
    """Stop ``up``; once it was killed, first the daemon the old code left running (it holds the
    output pipe the test reads ``up`` from)."""
    if up.proc.poll() is not None:
        for pid in daemon_pids(cwd):
            os.kill(pid, signal.SIGKILL)
    up.stop()


def wait_gone(pids: list[int], within: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if not any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in pids):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"processes {pids} still run {within} s later")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


@pytest.mark.timeout(300)
def test_up_killed_with_sigkill_takes_its_daemon_along_and_a_second_up_refuses_a_live_one(tmp_path: Path) -> None:
    """Old code: the daemon lived on with PPID 1, and a second ``up`` started a second daemon on the
    same ipc path (its proxy talking to the orphan)."""
    up = LoggedUp(tmp_path, free_port())
    try:
        [daemon] = daemon_pids(tmp_path)
        second = subprocess.run(
            [sys.executable, "-m", "llmserver.cli", "up", "--bind", f"127.0.0.1:{free_port()}"],
            cwd=tmp_path,
            env={k: v for k, v in clean_env(tmp_path).items() if k != "LLMSERVER_RUNTIME_DIR"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1, second.stderr
        assert f"llmserver up: another runtime daemon (pid {daemon}) already answers on ipc://" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert daemon_pids(tmp_path) == [daemon], "the second up started no daemon"
        up.proc.send_signal(signal.SIGKILL)
        up.proc.wait(10)
        took = wait_gone([daemon], 10)
        print(f"FAULT up-sigkill: the daemon stopped {took:.1f} s after its parent")
    finally:
        stop_up(up, tmp_path)


@pytest.mark.timeout(180)
def test_a_second_daemon_refuses_an_endpoint_a_live_daemon_answers_on(make_daemon: type[Daemon]) -> None:
    """Old code: the second daemon unlinked the first one's socket file and took the path over."""
    first = make_daemon("--model", demo_spec(n_threads=2)).start()
    assert first.proc is not None
    second = subprocess.run(
        [sys.executable, "-m", "llmserver.commands.runtime", "--endpoint", first.endpoint, "--no-demo"],
        env=first.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2, second.stderr
    sentence = f"another runtime daemon (pid {first.proc.pid}) already answers on {first.endpoint}"
    assert sentence in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert first.alive() and Path(first.endpoint[len("ipc://") :]).exists()
    # The first daemon still owns its endpoint: a client reaches it, not a newcomer.
    from tests.harness import wait_ready

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, wait_ready(first.endpoint, ("smollm2",), 10)).result()
    # A socket file left by a daemon that was killed is no obstacle.
    first.kill()
    again = Daemon(first.endpoint, ["--no-demo"], first.env, first.log_path).start(ready_models=())
    try:
        assert again.alive()
    finally:
        again.kill()


@pytest.mark.timeout(300)
def test_a_restart_of_up_releases_the_reservations_of_the_requests_it_cut(tmp_path: Path) -> None:
    """Old code: the reservation of a request in flight when ``up`` was killed stayed held until the
    age bound (the request timeout plus a minute: 6 minutes), shrinking the key's quota."""
    port = free_port()
    up = LoggedUp(tmp_path, port)
    db = tmp_path / "data" / "app.db"
    key = limited_key(db, 3000)
    killed = threading.Event()

    def kill_up(result: Streamed) -> None:
        if not killed.is_set() and len(result.text) > 10:
            killed.set()
            up.proc.send_signal(signal.SIGKILL)

    try:
        result = stream_chat(
            f"http://127.0.0.1:{port}/v1", key, max_tokens=400, content="Write a long story.", after_chunk=kill_up
        )
        assert killed.is_set() and not result.done, result
        up.proc.wait(10)
        assert held(db)[0] == 1 and held(db)[1] > 400, "the cut request's reservation is held"
        for pid in daemon_pids(tmp_path):  # an orphan of the old code (its own test above)
            os.kill(pid, signal.SIGKILL)
        again = LoggedUp(tmp_path, port)
        try:
            assert held(db) == (0, 0), "the restart released it"
            assert re.search(r"released 1 quota reservation", again.text), again.text
        finally:
            assert again.stop() == 0
    finally:
        stop_up(up, tmp_path)


@pytest.mark.timeout(300)
def test_a_runtime_killed_with_requests_in_flight_releases_their_reservations(
    make_daemon: type[Daemon], make_proxy: object
) -> None:
    """The requests a runtime restart cuts (running and queued) end with an error and free what they held."""
    daemon = make_daemon("--model", demo_spec(n_threads=2)).start()
    proxy: Proxy = make_proxy(daemon.endpoint).start()  # type: ignore[operator]
    key = limited_key(proxy.db_path, 3000)
    first_text = threading.Event()
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(
                stream_chat,
                proxy.base_url,
                key,
                max_tokens=300,
                content="Write a long story.",
                after_chunk=lambda _: first_text.set(),
            )
            for _ in range(3)
        ]
        assert first_text.wait(60), "no text came"
        assert held(proxy.db_path)[0] == 3, "one running, two queued, each holding its tokens"
        daemon.kill()
        results = [f.result(60) for f in futures]
    assert all(r.error is not None or r.status >= 500 for r in results), results
    assert held(proxy.db_path) == (0, 0)
    [(reserved, used)] = proxy.query("SELECT tokens_reserved, tokens_used FROM api_keys WHERE name = 'limited'")
    assert reserved == 0 and isinstance(used, int) and used > 0  # the delivered part is billed


def runtime_models(endpoint: str) -> dict[str, ModelState]:
    async def ask() -> dict[str, ModelState]:
        async with RuntimeClient(endpoint, connect_wait=2) as client:
            return {m.name: m for m in await client.models()}

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, ask()).result()


def restart_runtime_without_models(daemon: Daemon) -> Daemon:
    """SIGKILL ``daemon`` and start another on its endpoint with no model: the proxy's reconciler must
    load the registered one again."""
    daemon.kill()
    return Daemon(daemon.endpoint, ["--no-demo"], daemon.env, daemon.log_path).start(ready_models=())


def wait_registered(proxy: Proxy, name: str, within: float = 30) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if proxy.query("SELECT 1 FROM models WHERE name = ? AND desired_state = 'running'", (name,)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} not registered")


@pytest.mark.timeout(300)
def test_a_model_wanted_running_answers_503_never_404_while_it_loads_again_after_a_runtime_restart(
    make_daemon: type[Daemon], make_proxy: object
) -> None:
    """Old code: 404 model_not_found (which the OpenAI SDKs do not retry) from the runtime's restart
    until the reconciler had loaded the model again, and for up to a second after it said "loaded"."""
    daemon = make_daemon("--model", demo_spec(n_threads=2)).start()
    proxy: Proxy = make_proxy(daemon.endpoint).start()  # type: ignore[operator]
    key = proxy.make_key()
    wait_registered(proxy, "smollm2")
    again = restart_runtime_without_models(daemon)
    try:
        answers: list[tuple[int, str | None]] = []
        end = time.monotonic() + 120
        while time.monotonic() < end:
            result = stream_chat(proxy.base_url, key, max_tokens=2, timeout=60)
            answers.append((result.status, result.headers.get("retry-after")))
            if result.status == 200 and result.done:
                break
            time.sleep(0.05)
        statuses = [status for status, _ in answers]
        assert statuses[-1] == 200, answers
        assert 404 not in statuses, answers
        assert any(status == 503 and retry for status, retry in answers), answers
        print(f"FAULT runtime-restart reload: {statuses.count(503)} answers 503 with retry-after, then 200")
    finally:
        again.kill()


@pytest.mark.timeout(300)
def test_every_load_warms_the_model_before_it_is_ready(make_daemon: type[Daemon], make_proxy: object) -> None:
    """Old code: only the proxy's start-up warm-up ran a first generation; a model loaded again by the
    reconciler (after a runtime restart, or a keep-alive) paid its first decode in a user's request."""
    daemon = make_daemon("--model", demo_spec(n_threads=2)).start()
    assert runtime_models(daemon.endpoint)["smollm2"].warm_ms is not None, "a model loaded at start"
    proxy: Proxy = make_proxy(daemon.endpoint).start()  # type: ignore[operator]
    key = proxy.make_key()
    wait_registered(proxy, "smollm2")
    again = restart_runtime_without_models(daemon)
    try:
        end = time.monotonic() + 120
        while (m := runtime_models(again.endpoint).get("smollm2")) is None or m.state != "ready":
            assert time.monotonic() < end, "not loaded again"
            time.sleep(0.1)
        model = runtime_models(again.endpoint)["smollm2"]
        assert isinstance(model.warm_ms, float), model  # warmed before it said ready
        assert model.served == 0  # the warm-up is no request
        timings = []
        for _ in range(2):
            started = time.monotonic()
            result = stream_chat(proxy.base_url, key, max_tokens=4, timeout=60)
            assert result.status == 200 and result.done, result
            timings.append(time.monotonic() - started)
        print(
            f"FAULT reload warm-up {model.warm_ms:.0f} ms; then requests {timings[0] * 1000:.0f} ms,"
            f" {timings[1] * 1000:.0f} ms"
        )
    finally:
        again.kill()


def test_the_probe_tells_a_socket_file_left_behind_from_a_live_listener(tmp_path: Path) -> None:
    """A file a killed daemon left is taken over; a live process that is no daemon is refused too."""
    import socket

    from runtime.api.probe import probe_endpoint

    path = tmp_path / "rt.sock"
    endpoint = f"ipc://{path}"
    assert probe_endpoint(endpoint) is None  # no file
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        other = probe_endpoint(endpoint, timeout=0.3)
        assert other is not None and other.pid is None
        assert other.refusal().startswith(f"another process already listens on {endpoint}")
    assert path.exists() and probe_endpoint(endpoint) is None  # left behind: nobody listens
