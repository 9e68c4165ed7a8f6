"""Issue 25, "Secrets and the vault" and "The CLI on a real install", through the real processes: ``llmserver
up`` (the README's ``make run``) in an empty directory, the ``llmserver`` command in the same directory with
nothing in the shell, a speech model whose calls need the stored token (a stand-in for Hugging Face's
inference service that refuses any other), and ``vault rotate-key`` while the proxy runs."""

from __future__ import annotations

import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest

from tests.harness import clean_env, free_port
from tests.speech_standin import StandIn

HF_TOKEN = "hf_" + "rotationtoken" * 3
BANNER_END = "Stop with Ctrl-C."


class Up:
    """``llmserver up`` in ``cwd`` with ``extra`` in its environment, until its banner."""

    def __init__(self, cwd: Path, port: int, extra: dict[str, str]) -> None:
        env = clean_env(cwd) | extra
        env.pop("LLMSERVER_RUNTIME_DIR")
        argv = [sys.executable, "-m", "llmserver.cli", "up", "--bind", f"127.0.0.1:{port}"]
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        end = time.monotonic() + 120
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.startswith(BANNER_END):
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        self.stop()
        raise AssertionError("no banner from llmserver up:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()


def cli(cwd: Path, *args: str, stdin: str = "", **extra: str) -> subprocess.CompletedProcess[str]:
    """The ``llmserver`` command as an operator types it in the install's directory: no settings in the shell."""
    env = clean_env(cwd) | extra
    env.pop("LLMSERVER_RUNTIME_DIR")
    argv = [sys.executable, "-m", "llmserver.cli", *args]
    return subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120)


def speak(port: int, key: str) -> bytes:
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=30) as c:
        return c.audio.speech.create(model="voice", voice="alloy", input="Hello there.", response_format="wav").content


def stored_key(cwd: Path) -> str:
    text = (cwd / "data" / "secrets.env").read_text()
    match = re.search(r"^LLMSERVER_ENCRYPTION_KEY=([0-9a-f]{64})$", text, re.M)
    assert match, "no encryption key in data/secrets.env"
    return match.group(1)


def previous_copies(cwd: Path) -> int:
    conn = sqlite3.connect(cwd / "data" / "app.db")
    try:
        return int(
            conn.execute("SELECT COUNT(*) FROM huggingface_tokens WHERE previous_ciphertext IS NOT NULL").fetchone()[0]
        )
    finally:
        conn.close()


@pytest.fixture
def standin() -> object:
    s = StandIn(HF_TOKEN, gate_seconds=0.0).start()
    yield s
    s.stop()


@pytest.mark.timeout(600)
def test_rotation_with_the_proxy_running_keeps_tokens_working_and_refuses_the_old_key(
    tmp_path: Path, standin: StandIn
) -> None:
    """Issue 25: right after ``make run`` the CLI stores a token with the key ``up`` generated; ``rotate-key``
    while the proxy runs writes the new key where it was read and the running proxy keeps calling with the
    token; the old key in a shell is refused in one sentence; after a restart the old-key copies are gone;
    a proxy whose key cannot decrypt the token fails the call and never sends it anonymously."""
    port, extra = free_port(), {"LLMSERVER_HF_INFERENCE_URL": standin.url}
    up = Up(tmp_path, port, extra)
    try:
        key = re.search(r"(llms_\S+)", "\n".join(up.lines))
        assert key, up.lines
        api_key = key.group(1)
        added = cli(tmp_path, "vault", "add", "--label", "hub", "--default", stdin=HF_TOKEN + "\n")
        assert added.returncode == 0, added.stderr  # it failed: the CLI did not read data/secrets.env
        assert "openssl rand" not in added.stderr and "token_hex" not in added.stderr
        doctor = cli(tmp_path, "doctor").stdout
        assert "cannot be stored" not in doctor and "Hugging Face tokens can be stored and read" in doctor
        assert cli(tmp_path, "models", "add", "voice", "--repo", "acme/tts-model", "--kind", "tts").returncode == 0
        assert cli(tmp_path, "models", "start", "voice").returncode == 0
        assert speak(port, api_key).startswith(b"RIFF")
        old_key = stored_key(tmp_path)

        rotated = cli(tmp_path, "vault", "rotate-key")
        assert rotated.returncode == 0, rotated.stderr
        assert "data/secrets.env" in rotated.stdout and old_key not in rotated.stdout
        new_key = stored_key(tmp_path)
        assert new_key != old_key
        standin.reset()
        assert speak(port, api_key).startswith(b"RIFF"), "the running proxy lost the token at the rotation"
        assert len(standin.calls) == 1

        stale = cli(
            tmp_path,
            "vault",
            "add",
            "--label",
            "stale",
            stdin="hf_stalestalestale\n",
            **{"LLMSERVER_ENCRYPTION_KEY": old_key},
        )
        assert stale.returncode == 2
        assert (
            "is not the key the stored Hugging Face tokens use" in stale.stderr
            and "nothing was changed" in stale.stderr
        )
        assert len(stale.stderr.strip().splitlines()) == 1 and old_key not in stale.stderr
        assert "stale" not in cli(tmp_path, "vault", "list").stdout
    finally:
        up.stop()

    assert previous_copies(tmp_path) == 1
    up = Up(tmp_path, port, extra)  # the new key, from data/secrets.env
    try:
        assert speak(port, api_key).startswith(b"RIFF")
        assert previous_copies(tmp_path) == 0, "the copies under the old key outlived the restart"
    finally:
        up.stop()

    up = Up(tmp_path, port, extra | {"LLMSERVER_ENCRYPTION_KEY": secrets.token_hex(32)})  # a key that reads nothing
    try:
        standin.reset()
        with pytest.raises(openai.InternalServerError) as refused:
            speak(port, api_key)
        assert refused.value.status_code == 500 and "cannot be decrypted" in str(refused.value)
        assert standin.calls == [], "the call went upstream without the token"
    finally:
        up.stop()
