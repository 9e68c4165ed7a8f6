"""``llmserver admin create-user|create-token`` and the audit of CLI actions (issue 9)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from admin_ui.monitor import SystemMonitor
from tests.harness import ROOT, clean_env

pytestmark = pytest.mark.timeout(60)


def cli(tmp_path: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = clean_env(tmp_path)
    env.update({"LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/app.db", "LLMSERVER_ARGON2_PROFILE": "test"})
    return subprocess.run(
        [sys.executable, "-m", "llmserver.cli", *argv], input=stdin, capture_output=True, text=True, env=env, cwd=ROOT
    )


def rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(tmp_path / "app.db")
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def test_create_user_reads_the_password_from_stdin_never_from_an_argument(tmp_path: Path) -> None:
    made = cli(tmp_path, "admin", "create-user", "carol", "--role", "viewer", stdin="a long enough password\n")
    assert made.returncode == 0, made.stderr
    assert "created viewer carol" in made.stdout and "a long enough password" not in made.stdout
    (stored,) = rows(tmp_path, "SELECT username, role, password_hash FROM users")
    assert stored[:2] == ("carol", "viewer") and str(stored[2]).startswith("$argon2id$")
    short = cli(tmp_path, "admin", "create-user", "dave", stdin="short\n")
    assert short.returncode == 2 and "12 to 1024 characters" in short.stderr
    argument = cli(tmp_path, "admin", "create-user", "erin", "--password", "x" * 20)
    assert argument.returncode == 2 and "unrecognized arguments" in argument.stderr
    twice = cli(tmp_path, "admin", "create-user", "carol", stdin="another long password\n")
    assert twice.returncode == 2 and "already exists" in twice.stderr


def test_cli_actions_are_in_the_audit_log(tmp_path: Path) -> None:
    assert cli(tmp_path, "admin", "create-user", "frank", stdin="a long enough password\n").returncode == 0
    token = cli(tmp_path, "admin", "create-token", "backup script", "--user", "frank", "--scope", "viewer")
    assert token.returncode == 0 and token.stdout.splitlines()[-1].startswith("llmsadm_")
    key = cli(tmp_path, "keys", "create", "--name", "nightly", "--token-limit", "100", "--budget-period", "weekly")
    assert key.returncode == 0, key.stderr
    assert cli(tmp_path, "keys", "revoke", "1").returncode == 0
    audit = rows(tmp_path, "SELECT actor, source, action, target, after FROM admin_audit ORDER BY id")
    assert [a[2] for a in audit] == ["user.create", "admin_token.create", "api_key.create", "api_key.revoke"]
    assert all(str(a[0]).startswith("cli:") and a[1] == "cli" for a in audit)
    secrets = [token.stdout.splitlines()[-1], key.stdout.splitlines()[-1], "argon2"]
    assert not any(s in str(audit) for s in secrets), "no secret reaches the audit log"
    assert rows(tmp_path, "SELECT budget_period FROM api_keys") == [("weekly",)]


def test_the_monitor_reads_an_rk3588_npu_and_says_when_there_is_none(tmp_path: Path) -> None:
    board = tmp_path / "board"
    (board / "proc").mkdir(parents=True)
    (board / "proc/stat").write_text("cpu  4 0 4 8 0\ncpu0 2 0 2 4 0 0 0\ncpu1 2 0 2 4 0 0 0\n")
    (board / "proc/meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 250 kB\n")
    npu = board / "sys/kernel/debug/rknpu"
    npu.mkdir(parents=True)
    (npu / "load").write_text("NPU load:  Core0: 12%, Core1:  0%, Core2: 40%,\n")
    freq = board / "sys/class/devfreq/fdab0000.npu"
    freq.mkdir(parents=True)
    (freq / "cur_freq").write_text("1000000000\n")
    zone = board / "sys/class/thermal/thermal_zone6"
    zone.mkdir(parents=True)
    (zone / "type").write_text("npu-thermal\n")
    (zone / "temp").write_text("41500\n")
    monitor = SystemMonitor(tmp_path, root=board)
    first = monitor.sample()
    assert first["memory"] == {"total": 1024000, "used": 768000}
    assert first["npu"] == {"load": [12, 0, 40], "freq_hz": 1_000_000_000, "temp_c": 41.5}
    assert first["gpu"] is None
    (board / "proc/stat").write_text("cpu  0 0 0 0 0\ncpu0 12 0 2 4 0 0 0\ncpu1 2 0 2 14 0 0 0\n")
    assert monitor.cpu() == [100.0, 0.0]
    bare = SystemMonitor(tmp_path, root=tmp_path / "nothing").sample()
    assert bare["npu"] is None and bare["gpu"] is None and bare["cpu"] == []


def test_admin_serve_runs_the_console_alone_and_needs_the_session_key(tmp_path: Path) -> None:
    import httpx2 as httpx

    from tests.harness import free_port

    assert cli(tmp_path, "admin", "create-user", "gina", stdin="a long enough password\n").returncode == 0
    missing = cli(tmp_path, "admin", "serve")
    assert missing.returncode == 2 and "LLMSERVER_SESSION_KEY" in missing.stderr
    port = free_port()
    env = clean_env(tmp_path)
    env.update(
        {
            "LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
            "LLMSERVER_SESSION_KEY": "cd" * 64,
            "LLMSERVER_ADMIN_BIND_ADDRESS": f"127.0.0.1:{port}",
            "LLMSERVER_MODEL_CONFIG_DIR": str(tmp_path / "config"),
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "llmserver.cli", "admin", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(200):
                try:
                    page = http.get("/admin/login")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
            assert page.headers["server"] == "llmserver"  # issue 19: no versions (was Python/3.x aiohttp/3.x)
            assert http.get("/", follow_redirects=False).headers["server"] == "llmserver"
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            form = {"csrf": csrf, "username": "gina", "password": "a long enough password", "next": "/admin/"}
            assert http.post("/admin/login", data=form).status_code == 303
            dashboard = http.get("/admin/")
            assert dashboard.status_code == 200 and "the runtime is not reachable" in dashboard.text
            # The model registry works alone too (the console's own Lifecycle, no reconciler).
            page = http.get("/admin/models")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            body = {"name": "alone", "local_path": "/models/alone.gguf"}
            made = http.post("/admin/api/models", json=body, headers={"X-CSRF-Token": csrf})
            assert made.status_code == 201, made.text
            assert json.loads((tmp_path / "config" / "alone.json").read_text()) == made.json()
            assert 'data-model="alone"' in http.get("/admin/models").text
    finally:
        server.terminate()
        server.wait(10)
