"""The whole lifecycle on real parts (issue 10): the Hub stand-in, the real ``huggingface_hub`` client, a
vault token, the real daemon started without models, the proxy's reconciler, the official ``openai`` client.
Then restarts: the runtime killed with SIGKILL, the proxy restarted, a model whose file was deleted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, Daemon, Proxy
from tests.lifecycle.conftest import GATED_REPO, HUB_TOKEN, demo_gguf
from tests.lifecycle.hub import Hub

KEY = "5a" * 32

pytestmark = pytest.mark.timeout(240)


def cli(proxy: Proxy, *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``llmserver ARGS`` against the proxy's database and settings (another process, like an admin's shell)."""
    command = [sys.executable, "-m", "llmserver.cli", *args]
    return subprocess.run(
        command, env=proxy.env, input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def show(proxy: Proxy, name: str) -> dict[str, Any]:
    done = cli(proxy, "models", "show", name)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def chat(openai_client: Callable[..., Any], proxy: Proxy, key: str, model: str) -> str:
    client = openai_client(proxy.base_url, key)
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    text = answer.choices[0].message.content
    assert answer.model == model and text and answer.usage.completion_tokens > 0
    return str(text)


def until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if check():
                return
        except Exception:  # not yet (the proxy refuses while the model loads)
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def lifecycle_proxy(make_proxy: Any, daemon: Daemon, hub: Hub, tmp_path: Path) -> Proxy:
    proxy: Proxy = make_proxy(
        daemon.endpoint,
        HF_ENDPOINT=hub.endpoint,
        LLMSERVER_ENCRYPTION_KEY=KEY,
        LLMSERVER_HF_CACHE=str(tmp_path / "hf-cache"),
        LLMSERVER_MODEL_CONFIG_DIR=str(tmp_path / "config"),
    )
    return proxy.start()


def test_run_downloads_with_a_vault_token_resumes_a_cut_and_the_reconciler_serves_it(
    make_daemon: Any, make_proxy: Any, openai_client: Any, hub: Hub, tmp_path: Path
) -> None:
    daemon = make_daemon("--no-demo").start(ready_models=())
    proxy = lifecycle_proxy(make_proxy, daemon, hub, tmp_path)
    added = cli(proxy, "vault", "add", "--label", "hub", "--default", stdin=HUB_TOKEN + "\n")
    assert added.returncode == 0, added.stderr
    blob = hub.repos[GATED_REPO].files["model.Q4_K_M.gguf"].sha256
    hub.cut_once.add(blob)

    run = cli(proxy, "models", "run", GATED_REPO, "--wait", "90")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"running {GATED_REPO}:model.Q4_K_M.gguf as model.q4_k_m" in run.stdout
    assert "now running" in run.stdout, run.stdout

    # The real client fetched with the token, was cut half-way, and resumed with a Range request.
    cdn = [(r, ok) for method, path, r, ok in hub.requests if path == f"/cdn/{blob}" and method == "GET"]
    assert len(cdn) == 2 and cdn[0][0] is None and cdn[1][0] is not None
    assert any(ok for _, path, _, ok in hub.requests if "/resolve/" in path)
    record = show(proxy, "model.q4_k_m")
    assert record["download_state"] == "done" and record["sha256"] == blob and record["actual_state"] == "running"
    assert record["local_path"].startswith(str(tmp_path / "hf-cache" / "models--meta-llama--Gated-GGUF"))
    assert json.loads((tmp_path / "config" / "model.q4_k_m.json").read_text()) == record

    key = proxy.make_key()
    assert chat(openai_client, proxy, key, "model.q4_k_m")
    for log in (proxy.log_path, daemon.log_path):
        assert HUB_TOKEN not in log.read_text()


def test_models_come_back_after_a_runtime_sigkill_and_a_proxy_restart_and_a_deleted_file_shows_its_error(
    make_daemon: Any, make_proxy: Any, openai_client: Any, hub: Hub, tmp_path: Path
) -> None:
    daemon = make_daemon("--no-demo").start(ready_models=())
    proxy = lifecycle_proxy(make_proxy, daemon, hub, tmp_path)
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(demo_gguf(), copy)
    for name, path in (("keeper", demo_gguf()), ("doomed", copy)):
        added = cli(proxy, "models", "add", name, "--path", str(path), "--param", "n_ctx=512")
        assert added.returncode == 0, added.stderr
        started = cli(proxy, "models", "start", name, "--wait", "60")
        assert "now running" in started.stdout, started.stdout + started.stderr
    key = proxy.make_key()
    assert chat(openai_client, proxy, key, "keeper") and chat(openai_client, proxy, key, "doomed")

    daemon.kill()  # SIGKILL: every model is gone with it
    daemon.start(ready_models=())
    until(lambda: bool(chat(openai_client, proxy, key, "keeper")), what="keeper after the runtime restart")
    until(lambda: bool(chat(openai_client, proxy, key, "doomed")), what="doomed after the runtime restart")

    proxy.kill()  # and the proxy, while the runtime also restarts empty (a reboot)
    daemon.kill()
    daemon.start(ready_models=())
    proxy.start()
    until(lambda: bool(chat(openai_client, proxy, key, "keeper")), what="keeper after the proxy restart")

    copy.unlink()
    daemon.kill()
    daemon.start(ready_models=())
    until(lambda: show(proxy, "doomed")["actual_state"] == "failed", what="the deleted file's error")
    record = show(proxy, "doomed")
    assert str(copy) in record["error"] and record["failures"] >= 1 and record["retry_at"] is not None
    time.sleep(5)  # back-off (2 s, 4 s, 8 s...): a few tries in 5 s, not a hot loop
    assert show(proxy, "doomed")["failures"] <= record["failures"] + 2
    until(lambda: bool(chat(openai_client, proxy, key, "keeper")), what="keeper beside the broken model")
    listing = cli(proxy, "models", "list").stdout
    assert "doomed" in listing and "failed" in listing and "keeper" in listing


def test_an_idle_model_is_unloaded_after_its_keep_alive_and_loaded_again_for_the_next_request(
    make_daemon: Any, make_proxy: Any, openai_client: Any, hub: Hub, tmp_path: Path
) -> None:
    daemon = make_daemon("--no-demo").start(ready_models=())
    proxy = lifecycle_proxy(make_proxy, daemon, hub, tmp_path)
    added = cli(proxy, "models", "add", "sleepy", "--path", str(demo_gguf()), "--keep-alive", "2")
    assert added.returncode == 0, added.stderr
    assert "now running" in cli(proxy, "models", "start", "sleepy", "--wait", "60").stdout
    key = proxy.make_key()
    first = chat(openai_client, proxy, key, "sleepy")

    until(lambda: show(proxy, "sleepy")["actual_state"] == "idle", timeout=30, what="the idle unload")
    assert "sleepy" not in _runtime_models(daemon)
    listed = [m.id for m in openai_client(proxy.base_url, key).models.list()]  # served on demand: still listed
    assert "sleepy" in listed, listed
    assert chat(openai_client, proxy, key, "sleepy") == first  # temperature 0: the same answer, after a load
    assert daemon.log_text().count("model sleepy ready") == 2  # loaded at start, and again for the request
    assert show(proxy, "sleepy")["error"] is None


def test_a_model_from_the_runtimes_command_line_is_registered_and_one_too_big_for_memory_is_refused(
    make_daemon: Any, make_proxy: Any, hub: Hub, tmp_path: Path
) -> None:
    from tests.harness import demo_spec

    daemon = make_daemon("--model", demo_spec("boot")).start(ready_models=("boot",))
    proxy = lifecycle_proxy(make_proxy, daemon, hub, tmp_path)
    until(lambda: show(proxy, "boot")["from_runtime"] is True, what="the --model model in the registry")
    assert "(--model)" in cli(proxy, "models", "list").stdout
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as f:  # sparse: as large as the machine's memory twice, costs no disk
        f.write(b"GGUF")
        f.truncate(2 * _mem_total())
    cli(proxy, "models", "add", "huge", "--path", str(huge))
    started = cli(proxy, "models", "start", "huge", "--wait", "30")
    assert started.returncode == 2 and "not enough memory to load" in started.stdout, started.stdout
    assert daemon.alive() and "boot" in _runtime_models(daemon)
    # A TTS model is served remotely (the inference service): starting it only marks it running.
    assert cli(proxy, "models", "add", "voice", "--kind", "tts", "--repo", "hexgrad/Kokoro-82M").returncode == 0
    voice = cli(proxy, "models", "start", "voice", "--wait", "20")
    assert "now running" in voice.stdout, voice.stdout + voice.stderr
    assert "voice" not in _runtime_models(daemon)
    assert cli(proxy, "models", "rm", "boot").returncode == 0  # removed: unloaded, and not adopted again
    until(lambda: "boot" not in _runtime_models(daemon), timeout=20, what="boot unloaded")
    time.sleep(2.5)  # a reconcile pass later
    assert "boot" not in cli(proxy, "models", "list").stdout


def _mem_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def _runtime_models(daemon: Daemon) -> dict[str, str]:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from runtime.api.client import RuntimeClient

    async def models() -> dict[str, str]:
        async with RuntimeClient(daemon.endpoint) as client:
            return {m.name: m.state for m in await client.models()}

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, models()).result()
