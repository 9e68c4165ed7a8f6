"""Issue 23: local speech models go through the model lifecycle like text models: the reconciler loads a
registered voice into the real daemon, idles it out after its keep-alive, unloads it when stopped, and
registers a transcriber the daemon was started with under its kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime.backends.speech.packages import VOICE_PACKAGES
from tests.lifecycle.hub import Hub
from tests.lifecycle.test_flow import _runtime_models, cli, lifecycle_proxy, show, until
from tests.speech_local import WHISPER_SPEC

pytestmark = pytest.mark.timeout(240)


def test_a_local_voice_is_loaded_idled_and_stopped_by_the_reconciler(
    make_daemon: Any, make_proxy: Any, hub: Hub, tmp_path: Path
) -> None:
    daemon = make_daemon("--no-demo", "--model", WHISPER_SPEC).start(ready_models=("whisper",), timeout=110)
    proxy = lifecycle_proxy(make_proxy, daemon, hub, tmp_path)
    until(lambda: show(proxy, "whisper")["from_runtime"] is True, what="the --model transcriber registered")
    assert show(proxy, "whisper")["kind"] == "stt"

    joe = str(VOICE_PACKAGES["joe"].path())
    added = cli(proxy, "models", "add", "voice", "--kind", "tts", "--backend", "piper", "--path", joe)
    assert added.returncode == 0, added.stderr
    assert cli(proxy, "models", "set", "voice", "keep_alive=3").returncode == 0
    started = cli(proxy, "models", "start", "voice", "--wait", "110", timeout=150)
    assert "now running" in started.stdout, started.stdout + started.stderr
    assert _runtime_models(daemon)["voice"] == "ready"

    until(lambda: show(proxy, "voice")["actual_state"] == "idle", timeout=60, what="the voice's idle unload")
    assert "voice" not in _runtime_models(daemon)

    assert cli(proxy, "models", "stop", "whisper").returncode == 0
    until(lambda: "whisper" not in _runtime_models(daemon), timeout=30, what="the transcriber unloaded")
    assert show(proxy, "whisper")["actual_state"] == "stopped"
