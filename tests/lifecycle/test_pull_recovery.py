"""Issue 25: pulls whose process dies, failed runs and re-pulls, changing a model from the CLI, where the
config files go. Real processes where the item is about them: ``llmserver models run`` killed with SIGKILL
mid-file, the proxy restarted, the runtime loading the model once a second pull finished."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.lifecycle.errors import DownloadError
from proxy.lifecycle.registry import RunPlan
from proxy.lifecycle.service import Lifecycle
from proxy.storage.database import Database
from tests.harness import ROOT, clean_env
from tests.lifecycle.conftest import DEMO_REPO
from tests.lifecycle.hub import Hub
from tests.lifecycle.test_flow import cli, lifecycle_proxy, show, until

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.timeout(300)
def test_a_killed_run_says_interrupted_and_a_re_pull_continues_and_starts_the_model(
    make_daemon: Any, make_proxy: Any, hub: Hub, tmp_path: Path
) -> None:
    """A pull whose process died said "downloading NN%" forever (CLI, API, console) and Run's "start when
    downloaded" was lost: now the row says it was interrupted, at the proxy's start-up and while it runs, and
    the next pull continues from where it stopped and starts the model."""
    daemon = make_daemon("--no-demo").start(ready_models=())
    proxy = lifecycle_proxy(make_proxy, daemon, hub, tmp_path)
    hub.seconds_per_mib = 0.3  # about 30 s for the 94 MiB file: time to kill it half-way
    argv = [sys.executable, "-m", "llmserver.cli", "models", "run", f"{DEMO_REPO}:{FILE}", "--name", "smol"]
    run = subprocess.Popen(argv, env=proxy.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until(lambda: (show(proxy, "smol")["download_progress"] or 0) > 0.1, 60, "the run to download a tenth")
    run.send_signal(signal.SIGKILL)
    run.wait(10)
    # The running proxy notices (its watcher), without anybody asking.
    until(lambda: show(proxy, "smol")["download_state"] == "interrupted", 30, "the row to say interrupted")
    proxy.stop()
    proxy.start()  # the stack restarted: still interrupted, never "downloading"
    record = show(proxy, "smol")
    assert record["download_state"] == "interrupted" and record["start_when_downloaded"] is True
    assert "pull again to continue" in record["error"] and "starts once it is downloaded" in record["error"]
    listed = cli(proxy, "models", "list").stdout
    assert listed.splitlines()[1].split()[5] == "interrupted"  # the DOWNLOAD column, not "11%"

    hub.seconds_per_mib = 0.0
    pulled = cli(proxy, "models", "pull", "smol")
    assert pulled.returncode == 0, pulled.stderr
    ranges = [r for method, path, r, _ in hub.requests if path.startswith("/cdn/") and method == "GET"]
    assert ranges[-1] is not None and ranges[-1] != "bytes=0-", "the second pull started over"
    record = show(proxy, "smol")
    assert record["desired_state"] == "running" and record["start_when_downloaded"] is False
    until(lambda: show(proxy, "smol")["actual_state"] == "running", 120, "the proxy to load the pulled model")


@pytest.mark.asyncio
async def test_a_failed_run_forgets_the_model_it_registered_and_a_failed_re_pull_keeps_the_download(
    db: Database, hub: Hub, tmp_path: Path
) -> None:
    lifecycle = Lifecycle(tmp_path / "config", tmp_path / "cache", None, endpoint=hub.endpoint)
    await lifecycle.start(db, None)
    registry = lifecycle.registry
    with pytest.raises(DownloadError, match="has no file"):
        await registry.run(RunPlan("ghost", DEMO_REPO, "missing.gguf", "as asked"))
    assert await registry.store.find("ghost") is None and not (tmp_path / "config" / "ghost.json").exists()

    await registry.add("kept", source_repo=DEMO_REPO, files=[FILE], revision="main")
    done = await registry.pull("kept")
    hub.stop()  # the network goes away
    with pytest.raises(DownloadError, match="cannot reach"):
        await registry.pull("kept")
    after = await registry.store.get("kept")
    assert after.download_state == "done" and after.local_path == done.local_path
    assert after.error is not None and "the files downloaded before are kept" in after.error
    await lifecycle.close()


def test_models_set_changes_a_registered_model_through_the_apis_allow_list_and_configs_follow_the_database(
    tmp_path: Path,
) -> None:
    """``llmserver models set`` as the API's PATCH; the config file lands beside the database whatever the
    shell's working directory (it was written under the cwd's assets/config)."""
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    env = clean_env(tmp_path) | {"LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/data/app.db"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "llmserver.cli", "models", *args]
        return subprocess.run(command, env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60)

    assert run("add", "m", "--path", "/models/m.gguf").returncode == 0
    changed = run("set", "m", "keep_alive=300", 'params={"n_ctx": 1024}', "revision=v2")
    assert changed.returncode == 0, changed.stderr
    shown = json.loads(run("show", "m").stdout)
    assert (shown["keep_alive"], shown["params"], shown["revision"]) == (300, {"n_ctx": 1024}, "v2")
    refused = run("set", "m", "desired_state=running")
    assert refused.returncode == 2 and "cannot be changed: desired_state" in refused.stderr
    config = tmp_path / "data" / "models" / "m.json"
    assert json.loads(config.read_text())["keep_alive"] == 300
    assert not (elsewhere / "assets").exists()
    assert run("set", "nobody", "keep_alive=1").returncode == 2
    conn = sqlite3.connect(tmp_path / "data" / "app.db")
    try:
        actions = [row[0] for row in conn.execute("SELECT action FROM admin_audit")]
    finally:
        conn.close()
    assert actions.count("model.change") == 1
