"""Faults of the runtime daemon: SIGKILL under `llmserver up` (supervised), SIGSTOP under a proxy."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from proxy.metering.tokens import count_text
from tests.faults.clients import Streamed, scaled, stream_chat
from tests.harness import ROOT, Daemon, Proxy, clean_env, free_port
from tests.test_up import BANNER_END, daemon_pids


class LoggedUp:
    """``llmserver up`` whose whole output is kept (``text``)."""

    def __init__(self, cwd: Path, port: int) -> None:
        env = clean_env(cwd)
        env.pop("LLMSERVER_RUNTIME_DIR")
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmserver.cli", "up", "--bind", f"127.0.0.1:{port}"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._banner = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._banner.wait(90):
            self.stop()
            raise AssertionError("no banner:\n" + self.text)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(BANNER_END):
                self._banner.set()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def wait_served(base_url: str, key: str, within: float) -> float:
    """Seconds until a request succeeds again."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        result = stream_chat(base_url, key, max_tokens=4, timeout=10)
        if result.status == 200 and result.done and result.error is None:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not served again within {within} s")


def test_runtime_sigkilled_mid_stream_under_up_is_restarted_and_the_delivered_part_billed(tmp_path: Path) -> None:
    """Old code: the dead daemon stayed a zombie and every request answered 503 for as long as up ran."""
    port = free_port()
    up = LoggedUp(tmp_path, port)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        key = re.search(r"Your first API key \(shown once, store it now\): (llms_\S+)", up.text).group(1)  # type: ignore[union-attr]
        [pid] = daemon_pids(tmp_path)
        killed_at: list[float] = []

        def kill_after_some_text(result: Streamed) -> None:
            if not killed_at and len(result.text) > 20:
                os.kill(pid, signal.SIGKILL)
                killed_at.append(time.monotonic())

        result = stream_chat(base, key, max_tokens=400, content="Write a long story.", after_chunk=kill_after_some_text)
        assert killed_at, "the stream ended before the kill"
        assert result.error is not None and result.error_at is not None, result
        assert result.error_at - killed_at[0] < 2.0, "the error event came late"
        recovered = wait_served(base, key, 60)
        new = daemon_pids(tmp_path)
        assert new and new != [pid]
        assert re.search(r"the runtime daemon killed by SIGKILL; restarting it", up.text), up.text
        assert "restarted (pid" in up.text
        db = tmp_path / "data" / "app.db"
        import sqlite3

        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT status, completion_tokens FROM token_usage_events WHERE request_id = ?", (result.request_id,)
            ).fetchone()
        assert row is not None and row[0] == 502
        assert row[1] == count_text(result.text) > 0  # the delivered part is billed, exactly
        print(
            f"FAULT runtime-sigkill: error event {result.error_at - killed_at[0]:.2f} s,"
            f" served again after {recovered:.1f} s"
        )
    finally:
        assert up.stop() == 0
    assert not daemon_pids(tmp_path)
    assert "Traceback" not in up.text and key not in up.text.split(BANNER_END)[-1]


def test_runtime_sigstopped_errors_within_the_deadline_and_serves_after_sigcont(
    make_daemon: type[Daemon], make_proxy: object
) -> None:
    from tests.harness import demo_spec

    daemon = make_daemon("--model", demo_spec(n_threads=2)).start()
    proxy: Proxy = make_proxy(daemon.endpoint, LLMSERVER_REQUEST_TIMEOUT="3").start()  # type: ignore[operator]
    key = proxy.make_key()
    assert daemon.proc is not None
    stopped_for = scaled(5, 10)
    daemon.proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: _timed(proxy.base_url, key), range(4)))
        for result, took in results:
            assert took < 3 + 2, f"a request took {took:.1f} s with a 3 s deadline"
            assert result.status in (503, 504) or result.error is not None, result
            assert result.status != 500
        time.sleep(max(0.0, stopped_for - (time.monotonic() - stopped)))
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    recovered = wait_served(proxy.base_url, key, 30)
    print(
        f"FAULT runtime-sigstop {stopped_for:.0f} s: 4 errors within the deadline,"
        f" served {recovered:.1f} s after SIGCONT"
    )
    [(unbilled,)] = proxy.query("SELECT count(*) FROM token_usage_events WHERE status >= 500 AND prompt_tokens = 0")
    assert unbilled >= 4  # the server could not run them: they cost nothing


def _timed(base_url: str, key: str) -> tuple[Streamed, float]:
    started = time.monotonic()
    result = stream_chat(base_url, key, max_tokens=8, timeout=20)
    return result, time.monotonic() - started
