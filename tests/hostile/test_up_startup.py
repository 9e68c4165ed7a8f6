"""Issue 14: `llmserver up` start-up problems are one sentence naming the setting or path; no orphan."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from pathlib import Path

from tests.faults.fs import tmpfs
from tests.harness import clean_env, free_port
from tests.test_up import daemon_pids


def run_up(cwd: Path, port: int, **env: str) -> subprocess.CompletedProcess[str]:
    full = clean_env(cwd)
    full.pop("LLMSERVER_RUNTIME_DIR")
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "llmserver.cli", "up", "--bind", f"127.0.0.1:{port}"],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_port_already_taken_is_one_sentence_and_leaves_no_daemon(tmp_path: Path) -> None:
    """Old code: a traceback, and the runtime daemon left running as an orphan."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_up(tmp_path, port)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert f"LLMSERVER_BIND_ADDRESS=127.0.0.1:{port}: the port is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not daemon_pids(tmp_path)


def test_a_read_only_data_directory_is_one_sentence_naming_the_path(tmp_path: Path) -> None:
    """Old code: a Python traceback."""
    keys = {"LLMSERVER_ENCRYPTION_KEY": secrets.token_hex(32), "LLMSERVER_SESSION_KEY": secrets.token_hex(64)}
    with tmpfs(tmp_path / "data", readonly=True):
        result = run_up(tmp_path, free_port(), **keys)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert str(tmp_path / "data" / "app.db") in result.stderr and "read-only" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not daemon_pids(tmp_path)
    # and without the secrets in the environment, the secrets file is the path named
    with tmpfs(tmp_path / "data", readonly=True):
        result = run_up(tmp_path, free_port())
    assert "Traceback" not in result.stderr and "secrets.env" in result.stderr
    assert result.returncode == 1


def test_keys_create_on_a_full_disk_says_the_disk_is_full(tmp_path: Path) -> None:
    """Old code: "cannot migrate the database"."""
    with tmpfs(tmp_path / "db", size="2m") as mount:
        env = clean_env(tmp_path)
        env["LLMSERVER_DATABASE_URL"] = f"sqlite:///{mount}/app.db"
        argv = [sys.executable, "-m", "llmserver.cli", "keys", "create", "--name"]
        first = subprocess.run([*argv, "first"], env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        with (mount / "filler").open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        full = subprocess.run([*argv, "second"], env=env, capture_output=True, text=True, timeout=60)
    assert full.returncode != 0
    assert "full" in full.stderr and "Traceback" not in full.stderr, full.stderr
    assert "cannot migrate" not in full.stderr
