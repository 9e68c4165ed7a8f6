"""The registry: ``<config dir>/<name>.json`` equals the row after every change; bad names refused
everywhere (storage, registry, CLI, admin API); the admin JSON API in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from admin_ui.api.common import Auth, error
from admin_ui.api.hf_tokens import setup_hf_token_routes
from admin_ui.api.models import setup_model_routes
from proxy.lifecycle.service import Lifecycle
from proxy.storage.audit import Actor
from proxy.storage.database import Database
from proxy.storage.errors import ValidationError
from proxy.storage.models import ModelStore, check_model_name
from proxy.storage.vault import Vault
from tests.harness import ROOT, clean_env
from tests.lifecycle.conftest import DEMO_REPO, GATED_REPO, HUB_TOKEN
from tests.lifecycle.hub import Hub

ADMIN = "admin-test-token"


def bearer_auth(token: str) -> Auth:
    """A bearer check standing in for the console's authentication (tested in tests/admin)."""

    async def check(request: web.Request, admin_only: bool = False) -> Actor:
        if request.headers.get("Authorization") != f"Bearer {token}":
            raise error(401, "authentication required", "unauthorized")
        return Actor("token:test", request.remote or "unknown")

    return check


BAD_NAMES = ["../x", "..", "a/b", "a\\b", "x..y", ".hidden", "", "n" * 65, "sp ace", "é"]


def _assert_file_equals_row(config_dir: Path, record: object) -> None:
    data = json.loads((config_dir / f"{record.name}.json").read_text())  # type: ignore[attr-defined]
    assert data == record.to_json()  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_the_config_file_equals_the_row_after_every_change(db: Database, tmp_path: Path) -> None:
    config = tmp_path / "assets" / "config"
    store = ModelStore(db, config)
    changes = [
        {"desired_state": "running"},
        {"actual_state": "failed", "error": "boom", "failures": 1, "retry_at": 123.0},
        {"keep_alive": 2.0, "params": {"n_ctx": 2048, "n_threads": 2}},
    ]
    step = await store.create("m1", local_path="/models/m1.gguf", params={"n_ctx": 1024})
    _assert_file_equals_row(config, await store.get("m1"))
    for change in changes:
        step = await store.update("m1", **change)
        assert step == await store.get("m1")
        _assert_file_equals_row(config, step)
    assert not list(config.glob(".*.tmp"))  # written through a temporary file, renamed
    await store.delete("m1")
    assert not (config / "m1.json").exists()


@pytest.mark.asyncio
@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_names_are_refused_by_the_storage_layer(db: Database, tmp_path: Path, name: str) -> None:
    store = ModelStore(db, tmp_path / "config")
    with pytest.raises(ValidationError):
        check_model_name(name)
    with pytest.raises(ValidationError):
        await store.create(name, local_path="/m.gguf")
    with pytest.raises(ValidationError):
        await store.update(name, desired_state="running")
    with pytest.raises(ValidationError):
        store.config_path(name)
    assert not list((tmp_path).rglob("*.json"))


def test_bad_names_are_refused_by_the_command_line(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    env.update(LLMSERVER_DATABASE_URL=f"sqlite:///{tmp_path}/app.db", LLMSERVER_MODEL_CONFIG_DIR=str(tmp_path / "c"))
    for args in (["add", "../x", "--path", "/m.gguf"], ["show", "../x"], ["start", "a/b"], ["rm", ".."]):
        done = subprocess.run(
            [sys.executable, "-m", "llmserver.cli", "models", *args],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )
        assert done.returncode == 2 and "invalid model name" in done.stderr, (args, done.stderr)
    assert not (tmp_path / "c").exists() and not (tmp_path.parent / "x.json").exists()


@pytest_asyncio.fixture
async def api(db: Database, tmp_path: Path, hub: Hub) -> AsyncIterator[tuple[TestClient, Lifecycle]]:
    """The admin API's handlers on a real database, behind a bearer check (the console mounts them behind its own)."""
    lifecycle = Lifecycle(tmp_path / "config", tmp_path / "cache", Vault("44" * 32), endpoint=hub.endpoint)
    await lifecycle.start(db, None)
    app = web.Application()
    setup_model_routes(app, lifecycle, auth=bearer_auth(ADMIN))
    setup_hf_token_routes(app, lifecycle, auth=bearer_auth(ADMIN))
    client = TestClient(TestServer(app), headers={"Authorization": f"Bearer {ADMIN}"})
    await client.start_server()
    yield client, lifecycle
    await client.close()
    await lifecycle.close()


@pytest.mark.asyncio
async def test_the_admin_api_refuses_bad_names_and_unauthenticated_requests(
    api: tuple[TestClient, Lifecycle], tmp_path: Path
) -> None:
    client, _ = api
    denied = await client.get("/admin/api/models", headers={"Authorization": "Bearer nope"})
    assert denied.status == 401
    for name in ("../x", "a/b", "x..y"):
        r = await client.post("/admin/api/models", json={"name": name, "local_path": "/m.gguf"})
        assert r.status == 400 and "invalid model name" in (await r.json())["error"]["message"]
    r = await client.get("/admin/api/models/..%2Fx")
    assert r.status == 400
    r = await client.post("/admin/api/models/run", json={"spec": DEMO_REPO, "name": "../x"})
    assert r.status == 400
    for repo in ("../x", "a/../b", "a/b/c", "a"):
        r = await client.post("/admin/api/models", json={"name": "ok", "source_repo": repo, "files": ["m.gguf"]})
        assert r.status == 400 and "repository id" in (await r.json())["error"]["message"], repo
    r = await client.post("/admin/api/models", json={"name": "ok", "source_repo": "a/b", "files": ["../m.gguf"]})
    assert r.status == 400
    # The registry's own columns cannot be set by a caller (one allow-list, the registry's).
    r = await client.post("/admin/api/models", json={"name": "ok", "local_path": "/m.gguf", "actual_state": "running"})
    assert r.status == 400 and "actual_state" in (await r.json())["error"]["message"]
    assert not list(tmp_path.rglob("x.json")) and not list(tmp_path.rglob("ok.json"))


@pytest.mark.asyncio
async def test_the_admin_api_registers_downloads_with_a_vault_token_and_keeps_the_file_in_step(
    api: tuple[TestClient, Lifecycle], tmp_path: Path, hub: Hub
) -> None:
    client, lifecycle = api
    r = await client.post("/admin/api/hf-tokens", json={"label": "gated", "token": HUB_TOKEN, "default": True})
    token = await r.json()
    assert r.status == 201 and token["last_four"] == HUB_TOKEN[-4:] and HUB_TOKEN not in json.dumps(token)
    listed = await (await client.get("/admin/api/hf-tokens")).json()
    assert HUB_TOKEN not in json.dumps(listed) and listed["tokens"][0]["label"] == "gated"

    body = {"name": "gated", "source_repo": GATED_REPO, "files": ["model.Q4_K_M.gguf"], "keep_alive": 30}
    r = await client.post("/admin/api/models", json=body)
    assert r.status == 201
    _assert_file_equals_row(tmp_path / "config", await lifecycle.registry.store.get("gated"))
    r = await client.post("/admin/api/models/gated/start")
    assert r.status == 409 and "not downloaded" in (await r.json())["error"]["message"]

    assert (await client.post("/admin/api/models/gated/pull")).status == 202
    record = await _until(client, "gated", lambda m: m["download_state"] in ("done", "failed"))
    assert record["download_state"] == "done" and record["download_progress"] == 1.0, record
    assert record["sha256"] == hub.repos[GATED_REPO].files["model.Q4_K_M.gguf"].sha256
    assert Path(record["local_path"]).is_file()
    _assert_file_equals_row(tmp_path / "config", await lifecycle.registry.store.get("gated"))

    r = await client.post("/admin/api/models/gated/start")
    assert r.status == 200 and (await r.json())["desired_state"] == "running"
    r = await client.patch("/admin/api/models/gated", json={"params": {"n_ctx": 512}})
    assert (await r.json())["params"] == {"n_ctx": 512}
    _assert_file_equals_row(tmp_path / "config", await lifecycle.registry.store.get("gated"))
    r = await client.patch("/admin/api/models/gated", json={"hf_token_id": token["id"]})
    assert (await r.json())["hf_token_id"] == token["id"]
    assert (await client.delete(f"/admin/api/hf-tokens/{token['id']}")).status == 204
    record = await lifecycle.registry.store.get("gated")
    assert record.hf_token_id is None  # the database's ON DELETE SET NULL, and the file follows it
    _assert_file_equals_row(tmp_path / "config", record)
    assert (await client.delete("/admin/api/models/gated")).status == 204
    assert not (tmp_path / "config" / "gated.json").exists()


@pytest.mark.asyncio
async def test_run_picks_a_quantisation_and_a_failed_download_shows_its_error(
    api: tuple[TestClient, Lifecycle], hub: Hub
) -> None:
    client, _ = api
    r = await client.post("/admin/api/models/run", json={"spec": DEMO_REPO})
    plan = await r.json()
    assert r.status == 202 and plan["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "4-bit preferred among 2 GGUF files" == plan["reason"]
    record = await _until(client, plan["name"], lambda m: m["desired_state"] == "running")
    assert record["download_state"] == "done"

    r = await client.post(
        "/admin/api/models", json={"name": "g2", "source_repo": GATED_REPO, "files": ["model.Q4_K_M.gguf"]}
    )
    assert r.status == 201
    await client.post("/admin/api/models/g2/pull")
    record = await _until(client, "g2", lambda m: m["download_state"] == "failed")
    assert "gated repository" in record["error"]


@pytest.mark.asyncio
async def test_progress_moves_on_the_row_and_a_download_is_cancelled_from_the_api(
    api: tuple[TestClient, Lifecycle], hub: Hub, tmp_path: Path
) -> None:
    client, _ = api
    hub.seconds_per_mib = 0.06  # about 6 s for the 94 MiB file
    body = {"name": "slow", "source_repo": DEMO_REPO, "files": ["SmolLM2-135M-Instruct.Q4_1.gguf"]}
    assert (await client.post("/admin/api/models", json=body)).status == 201
    assert (await client.post("/admin/api/models/slow/pull")).status == 202
    seen = []
    for _ in range(3):
        record = await _until(client, "slow", lambda m: (m["download_progress"] or 0) > (seen[-1] if seen else 0))
        seen.append(record["download_progress"])
    assert record["download_state"] == "downloading" and record["total_bytes"] > record["downloaded_bytes"] > 0
    assert seen == sorted(seen) and len(set(seen)) == 3  # the UI sees it move
    assert (await client.post("/admin/api/models/slow/cancel")).status == 202
    record = await _until(client, "slow", lambda m: m["download_state"] != "downloading")
    assert record["download_state"] == "cancelled" and record["local_path"] is None
    big = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.stat().st_size > 1 << 20]
    assert [p.name.endswith(".kept.incomplete") for p in big] == [True]  # only the part kept for the next pull
    assert not list((tmp_path / "cache").rglob("snapshots/*/*.gguf"))  # no model file in place
    assert (await client.post("/admin/api/models/slow/cancel")).status == 409


async def _until(client: TestClient, name: str, done: object, timeout: float = 60) -> dict[str, object]:
    import asyncio
    import time

    end = time.monotonic() + timeout
    while True:
        record = await (await client.get(f"/admin/api/models/{name}")).json()
        if done(record) or time.monotonic() > end:  # type: ignore[operator]
            return dict(record)
        await asyncio.sleep(0.1)


@pytest.mark.asyncio
async def test_an_unwritable_config_directory_is_a_clear_error(db: Database, tmp_path: Path) -> None:
    from proxy.storage.errors import ConfigFileError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigFileError, match="LLMSERVER_MODEL_CONFIG_DIR"):
        await ModelStore(db, blocker / "config").create("m", local_path="/m.gguf")


def test_the_command_line_refuses_a_bad_context_or_thread_count_naming_it(tmp_path: Path) -> None:
    """issue 19: the parameters the console's forms offer are checked for ``models add`` and ``models set``
    too (one check in the registry), before anything is stored."""
    env = clean_env(tmp_path)
    env.update(LLMSERVER_DATABASE_URL=f"sqlite:///{tmp_path}/app.db", LLMSERVER_MODEL_CONFIG_DIR=str(tmp_path / "c"))

    def models(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "llmserver.cli", "models", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)

    refused = models("add", "m", "--path", "/m.gguf", "--param", "n_ctx=-5")
    assert refused.returncode != 0 and "params.n_ctx" in refused.stderr, refused.stderr
    assert models("add", "m", "--path", "/m.gguf", "--param", "n_ctx=1024").returncode == 0
    refused = models("set", "m", 'params={"n_threads": 0}')
    assert refused.returncode != 0 and "params.n_threads" in refused.stderr, refused.stderr
    shown = models("show", "m")
    assert '"n_ctx": 1024' in shown.stdout and "n_threads" not in shown.stdout
