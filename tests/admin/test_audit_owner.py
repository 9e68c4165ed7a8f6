"""Issue 20: one owner for every admin change. Every state-changing route of the console (its pages, from
the app's router; its JSON API, from ``admin_ui/openapi.json`` and the router) and every command of the
CLI writes its audit row in the SAME transaction as the change:

- with the audit insert refused by the database itself (a trigger on ``admin_audit``), the change is not
  made: every other table reads as before;
- then, allowed, the change is made and one audit row names its action and who did it (``alice`` from
  the console, ``cli:<unix user>`` from the command line).

The routes and commands are enumerated, not written out here: a new state-changing route or command
without a case in :data:`CASES` (or a reason in :data:`NOT_CHANGES`) fails its parameter of
:func:`test_every_admin_change_is_audited_in_its_own_transaction`. In-process console (real SQLite file,
real sessions and CSRF), the CLI as real processes on the same file, a Hub stand-in for downloads.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from admin_ui.app import create_admin_app
from admin_ui.appkeys import lifecycle_key
from admin_ui.background import tasks_key
from llmserver.cli import build_parser
from proxy.auth.apikey import create_password_hasher, hash_secret, key_minter
from proxy.lifecycle.service import Lifecycle
from proxy.settings import Settings
from proxy.storage.admin_tokens import AdminTokenRepository
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.hf_tokens import TokenStore
from proxy.storage.models import ModelStore
from proxy.storage.users import UserRepository
from proxy.storage.vault import Vault
from tests.harness import ROOT, clean_env
from tests.lifecycle.conftest import demo_gguf
from tests.lifecycle.hub import Hub

pytestmark = pytest.mark.timeout(120)

UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
PASSWORD = "correct horse battery"
VAULT_KEY = "5d" * 32
TINY_REPO, SLOW_REPO = "acme/tiny-GGUF", "acme/slow-GGUF"
RUN_SPEC = f"{TINY_REPO}:tiny.Q4_0.gguf"
TOTP_SECRET = pyotp.random_base32()
DEFAULT_TOKEN = "hf_" + "a" * 30  # the stored default token, which the Hub stand-in accepts
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# Written by the system while a download runs, not by an admin: left out of the before/after comparison.
VOLATILE = {"download_progress", "downloaded_bytes", "total_bytes", "download_heartbeat", "updated_at", "download_pid"}
NOT_AUDITED_TABLES = ("admin_audit", "login_failures", "sqlite_sequence")


# -- what is enumerated ----------------------------------------------------------------------------


def _alternatives(resource: Any, path: str) -> list[str]:
    """``/models/{name}/{action}`` -> one path per alternative of the ``action`` pattern."""
    pattern = resource.get_info().get("pattern")
    text = pattern.pattern if pattern is not None else ""
    paths = [path]
    for group, options in re.findall(r"\(\?P<(\w+)>\(([\w|-]+)\)\)", text):
        paths = [p.replace("{" + group + "}", option) for p in paths for option in options.split("|")]
    return paths


def console_changes() -> list[str]:
    """``METHOD path`` of every state-changing route: the console's router and the API's document."""
    settings = Settings(session_key=b"k" * 64, database_path=Path("/nonexistent/app.db"))
    found: set[str] = set()
    for route in create_admin_app(settings).router.routes():
        if route.method in UNSAFE and route.resource is not None:
            found.update(f"{route.method} {p}" for p in _alternatives(route.resource, route.resource.canonical))
    document = json.loads((ROOT / "admin_ui" / "openapi.json").read_text())
    for path, operations in document["paths"].items():
        found.update(f"{method.upper()} {path}" for method in operations if method.upper() in UNSAFE)
    return sorted(found)


def cli_commands() -> list[str]:
    """Every leaf command of ``llmserver`` (``keys create``, ``models rm``...)."""

    def leaves(parser: argparse.ArgumentParser, prefix: str) -> Iterator[str]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield prefix.strip()
            return
        for name, sub in subs[0].choices.items():
            yield from leaves(sub, f"{prefix} {name}")

    return sorted(f"cli {c}" for c in leaves(build_parser(), ""))


NOT_CHANGES = {
    "cli up": "runs the services; its first account and key are audited as 'llmserver up' (test_up.py)",
    "cli proxy": "runs the proxy",
    "cli runtime": "runs the runtime daemon",
    "cli chat": "a client of the proxy",
    "cli doctor": "reads",
    "cli backup": "reads (a copy of the database)",
    "cli restore": "replaces the whole file, audit log included: no row can be in its transaction",
    "cli migrate": "the schema, not an admin's data",
    "cli keys list": "reads",
    "cli models list": "reads",
    "cli models show": "reads",
    "cli vault list": "reads",
    "cli admin serve": "runs the console",
    "POST /models/{name}/test": "one generation through the runtime; nothing stored changes (the event model.test)",
    "POST /api/models/{name}/test": "one generation through the runtime; nothing stored changes (the event model.test)",
}


# -- the console and its seed ---------------------------------------------------------------------


@dataclass
class Console:
    http: TestClient[Any, Any]
    admin: web.Application
    db_path: Path
    env: dict[str, str]
    tmp: Path
    csrf: str = ""
    said: str = ""  # the last command's stderr
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def page(self, path: str) -> str:
        text = await (await self.http.get("/admin" + path)).text()
        found = _CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return text

    async def form(self, path: str, **data: str) -> int:
        response = await self.http.post("/admin" + path, data={**data, "csrf": self.csrf}, allow_redirects=False)
        return response.status

    async def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        headers = {"X-CSRF-Token": self.csrf}
        response = await self.http.request(method, "/admin" + path, json=body, headers=headers)
        return response.status

    async def settled(self) -> None:
        """Wait for the console's background work (a download a request started)."""
        for _ in range(200):
            if not self.admin[tasks_key]:
                return
            await asyncio.sleep(0.05)

    @property
    def registry(self) -> Any:
        return self.admin[lifecycle_key].registry


async def _seed(db: Database, config_dir: Path) -> None:
    hashed = hash_secret(PASSWORD, create_password_hasher("test"))
    users = UserRepository(db)
    alice = await users.create_user("alice", hashed, "admin")
    await users.create_user("bob", hashed, "viewer")
    dave = await users.create_user("dave", hashed, "viewer")
    await users.set_disabled(dave.id, True)
    tina = await users.create_user("tina", hashed, "admin")
    await users.set_totp(tina.id, TOTP_SECRET, [])
    keys = KeyRepository(db, key_minter(create_password_hasher("test")))
    await keys.create_key("k1")
    _, second = await keys.create_key("k2")
    await keys.set_disabled(second.id, True)
    await AdminTokenRepository(db).create("script", "admin", "alice", alice.id)
    tokens = TokenStore(db, Vault(VAULT_KEY))
    await tokens.add("first", DEFAULT_TOKEN, default=True)
    await tokens.add("second", "hf_" + "b" * 30)
    models = ModelStore(db, config_dir)
    await models.create("local", local_path="/models/local.gguf", download_state="local")
    await models.create("hub", source_repo=TINY_REPO, files=["tiny.Q4_0.gguf"])
    await models.create("slow", source_repo=SLOW_REPO, files=["slow.Q4_0.gguf"])


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A tiny model that downloads at once, and the demo GGUF slowly (about 20 s), to be cancelled."""
    tiny = tmp_path_factory.mktemp("hub") / "tiny.gguf"
    tiny.write_bytes(b"GGUF" + bytes(4092))
    hub = Hub()
    hub.add_repo(TINY_REPO, {"tiny.Q4_0.gguf": tiny})
    hub.add_repo(SLOW_REPO, {"slow.Q4_0.gguf": demo_gguf()})
    hub.seconds_per_mib = 0.2
    hub.valid_tokens.add(DEFAULT_TOKEN)
    hub.start()
    yield hub
    hub.stop()


@pytest_asyncio.fixture
async def local_console(tmp_path: Path, hub: Hub) -> AsyncIterator[Console]:
    """alice's session on an in-process console over a seeded database."""
    settings = Settings(
        session_key=b"k" * 64,
        database_path=tmp_path / "app.db",
        argon2_profile="test",
        model_config_dir=tmp_path / "config",
        hf_cache=tmp_path / "hf-cache",
        runtime_endpoint=f"ipc://{tmp_path}/runtime.sock",
    )
    env = clean_env(tmp_path)
    env.update(
        LLMSERVER_DATABASE_URL=f"sqlite:///{settings.database_path}",
        LLMSERVER_ARGON2_PROFILE="test",
        LLMSERVER_ENCRYPTION_KEY=VAULT_KEY,
        LLMSERVER_MODEL_CONFIG_DIR=str(settings.model_config_dir),
        LLMSERVER_HF_CACHE=str(settings.hf_cache),
        HF_ENDPOINT=hub.endpoint,
    )
    async with Database.open(settings.database_path) as db:
        await _seed(db, settings.model_config_dir)
        lifecycle = Lifecycle(settings.model_config_dir, settings.hf_cache, Vault(VAULT_KEY), endpoint=hub.endpoint)
        await lifecycle.start(db, None)
        admin = create_admin_app(settings, db=lambda: db, lifecycle=lambda: lifecycle)
        root = web.Application()
        root.add_subapp("/admin", admin)
        async with TestClient(TestServer(root)) as http:
            c = Console(http, admin, settings.database_path, env, tmp_path)
            await c.page("/login")
            assert await c.form("/login", username="alice", password=PASSWORD, next="/admin/") == 303
            await c.page("/account")
            yield c
            for task in c.tasks:
                task.cancel()
        await lifecycle.close()


# -- the cases ------------------------------------------------------------------------------------

Act = Callable[[Console], Awaitable[int]]


@dataclass(frozen=True)
class Case:
    action: str
    act: Act
    setup: Callable[[Console], Awaitable[None]] | None = None
    event: bool = False  # its own change (a login): audited, nothing else to compare
    kept: Callable[[Console], bool] | None = None  # also holds after a refused change (state not in a table)


def form(path: str, **data: str) -> Act:
    return lambda c: c.form(path, **data)


def api(method: str, path: str, body: dict[str, Any] | None = None) -> Act:
    return lambda c: c.api(method, path, body)


def cli(*argv: str, stdin: str = "") -> Act:
    async def run(c: Console) -> int:
        command = [sys.executable, "-m", "llmserver.cli", *argv]
        done = await asyncio.to_thread(
            subprocess.run, command, input=stdin, env=c.env, cwd=c.tmp, capture_output=True, text=True, timeout=60
        )
        c.said = done.stderr
        return 0 if done.returncode == 0 else 500

    return run


async def _running(c: Console) -> None:
    await c.registry.store.update("local", desired_state="running")


async def _failed(c: Console) -> None:
    await c.registry.store.update("local", desired_state="running", actual_state="failed", error="the load failed")


async def _downloading(c: Console) -> None:
    """A slow pull of ``slow`` running in the console's process (nobody's action: the set-up)."""
    c.tasks.append(asyncio.ensure_future(c.registry.pull("slow")))
    for _ in range(200):
        if (await c.registry.store.get("slow")).download_state == "downloading":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the slow pull did not start")


def _still_pulling(c: Console) -> bool:
    """The slow pull was not asked to stop (its row says so only once the download thread notices)."""
    return not c.registry._cancels["slow"].is_set()


async def _alice_has_totp(c: Console) -> None:
    await UserRepository(c.registry.store.db).set_totp(1, TOTP_SECRET, [])


async def _enrol(c: Console) -> int:
    page = await c.page("/account/totp")
    found = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page)
    assert found, "the enrolment page shows its secret"
    return await c.form("/account/totp", current=PASSWORD, code=pyotp.TOTP(found.group(1)).now())


async def _login_with_totp(c: Console) -> int:
    await c.form("/login", username="tina", password=PASSWORD, next="/admin/")
    await c.page("/login/totp")
    return await c.form("/login/totp", code=pyotp.TOTP(TOTP_SECRET).now())


USER_ACTIONS = {"disable": ("bob", "user.disable"), "enable": ("dave", "user.enable")}
USER_ACTIONS |= {"reset-password": ("bob", "user.reset-password"), "role": ("bob", "user.role")}
IDS = {"bob": "2", "dave": "3"}
NEW_PASSWORD = "another long password"
CASES: dict[str, list[Case]] = {
    "POST /login": [Case("login", form("/login", username="bob", password=PASSWORD, next="/admin/"), event=True)],
    "POST /login/totp": [Case("login", _login_with_totp, event=True)],
    "POST /logout": [Case("logout", form("/logout"))],
    "POST /api-keys": [Case("api_key.create", form("/api-keys", name="new"))],
    "POST /api-keys/{key_id}": [Case("api_key.update", form("/api-keys/1", name="renamed"))],
    "POST /api-keys/{key_id}/revoke": [Case("api_key.revoke", form("/api-keys/1/revoke", confirm="yes"))],
    "POST /api-keys/{key_id}/disable": [Case("api_key.disable", form("/api-keys/1/disable", confirm="yes"))],
    "POST /api-keys/{key_id}/enable": [Case("api_key.enable", form("/api-keys/2/enable"))],
    "POST /users": [Case("user.create", form("/users", username="erin", role="viewer"))],
    "POST /users/{user_id}": [
        Case(action, form(f"/users/{IDS[who]}", action=verb, role="admin", confirm="yes"))
        for verb, (who, action) in USER_ACTIONS.items()
    ],
    "POST /account/password": [
        Case("user.password", form("/account/password", current=PASSWORD, new=NEW_PASSWORD, again=NEW_PASSWORD))
    ],
    "POST /account/totp": [Case("user.totp.enable", _enrol)],
    "POST /account/totp/disable": [
        Case("user.totp.disable", form("/account/totp/disable", current=PASSWORD), _alice_has_totp)
    ],
    "POST /tokens": [Case("admin_token.create", form("/tokens", name="t2", scope="viewer", current=PASSWORD))],
    "POST /tokens/{token_id}/revoke": [Case("admin_token.revoke", form("/tokens/1/revoke", confirm="yes"))],
    "POST /models": [Case("model.add", form("/models", name="m2", local_path="/models/m2.gguf"))],
    "POST /models/run": [Case("model.run", form("/models/run", spec=RUN_SPEC, name="t2"))],
    "POST /models/{name}/pull": [Case("model.pull", form("/models/hub/pull"))],
    "POST /models/{name}/cancel": [
        Case("model.cancel", form("/models/slow/cancel"), _downloading, kept=_still_pulling)
    ],
    "POST /models/{name}/start": [Case("model.start", form("/models/local/start"))],
    "POST /models/{name}/retry": [Case("model.start", form("/models/local/retry"), _failed)],
    "POST /models/{name}/stop": [Case("model.stop", form("/models/local/stop"), _running)],
    "POST /models/{name}/remove": [Case("model.remove", form("/models/local/remove", confirm="yes"))],
    "POST /models/{name}/edit": [Case("model.change", form("/models/local/edit", n_ctx="1024", keep_alive="300"))],
    "POST /hf-tokens": [Case("hf_token.add", form("/hf-tokens", label="third", token="hf_" + "c" * 30))],
    "POST /hf-tokens/{token_id}/delete": [Case("hf_token.delete", form("/hf-tokens/2/delete", confirm="yes"))],
    "POST /hf-tokens/{token_id}/default": [Case("hf_token.default", form("/hf-tokens/2/default"))],
    "POST /api/api-keys": [Case("api_key.create", api("POST", "/api/api-keys", {"name": "new"}))],
    "PATCH /api/api-keys/{key_id}": [Case("api_key.update", api("PATCH", "/api/api-keys/1", {"name": "renamed"}))],
    "POST /api/api-keys/{key_id}/revoke": [Case("api_key.revoke", api("POST", "/api/api-keys/1/revoke"))],
    "POST /api/api-keys/{key_id}/disable": [Case("api_key.disable", api("POST", "/api/api-keys/1/disable"))],
    "POST /api/api-keys/{key_id}/enable": [Case("api_key.enable", api("POST", "/api/api-keys/2/enable"))],
    "POST /api/users": [Case("user.create", api("POST", "/api/users", {"username": "erin", "role": "viewer"}))],
    "PATCH /api/users/{user_id}": [
        Case(action, api("PATCH", f"/api/users/{IDS[who]}", {"action": verb, "role": "admin"}))
        for verb, (who, action) in USER_ACTIONS.items()
    ],
    "POST /api/tokens": [
        Case("admin_token.create", api("POST", "/api/tokens", {"name": "t2", "current_password": PASSWORD}))
    ],
    "POST /api/tokens/{token_id}/revoke": [Case("admin_token.revoke", api("POST", "/api/tokens/1/revoke"))],
    "POST /api/models": [Case("model.add", api("POST", "/api/models", {"name": "m2", "local_path": "/m2.gguf"}))],
    "POST /api/models/run": [Case("model.run", api("POST", "/api/models/run", {"spec": RUN_SPEC, "name": "t2"}))],
    "PATCH /api/models/{name}": [Case("model.change", api("PATCH", "/api/models/local", {"keep_alive": 300}))],
    "DELETE /api/models/{name}": [Case("model.remove", api("DELETE", "/api/models/local"))],
    "POST /api/models/{name}/pull": [Case("model.pull", api("POST", "/api/models/hub/pull"))],
    "POST /api/models/{name}/cancel": [
        Case("model.cancel", api("POST", "/api/models/slow/cancel"), _downloading, kept=_still_pulling)
    ],
    "POST /api/models/{name}/start": [Case("model.start", api("POST", "/api/models/local/start"))],
    "POST /api/models/{name}/stop": [Case("model.stop", api("POST", "/api/models/local/stop"), _running)],
    "POST /api/hf-tokens": [
        Case("hf_token.add", api("POST", "/api/hf-tokens", {"label": "x", "token": "hf_" + "c" * 30}))
    ],
    "DELETE /api/hf-tokens/{id}": [Case("hf_token.delete", api("DELETE", "/api/hf-tokens/2"))],
    "POST /api/hf-tokens/{id}/default": [Case("hf_token.default", api("POST", "/api/hf-tokens/2/default"))],
    "cli keys create": [Case("api_key.create", cli("keys", "create", "--name", "new"))],
    "cli keys revoke": [Case("api_key.revoke", cli("keys", "revoke", "1"))],
    "cli admin create-user": [Case("user.create", cli("admin", "create-user", "erin", stdin=NEW_PASSWORD + "\n"))],
    "cli admin create-token": [Case("admin_token.create", cli("admin", "create-token", "t2", "--user", "alice"))],
    "cli models add": [Case("model.add", cli("models", "add", "m2", "--path", "/models/m2.gguf"))],
    "cli models pull": [Case("model.pull", cli("models", "pull", "hub"))],
    "cli models run": [Case("model.run", cli("models", "run", RUN_SPEC, "--name", "t2"))],
    "cli models start": [Case("model.start", cli("models", "start", "local"))],
    "cli models stop": [Case("model.stop", cli("models", "stop", "local"), _running)],
    "cli models rm": [Case("model.remove", cli("models", "rm", "local"))],
    "cli models set": [Case("model.change", cli("models", "set", "local", "keep_alive=300"))],
    "cli vault add": [Case("hf_token.add", cli("vault", "add", "--label", "third", stdin="hf_" + "c" * 30 + "\n"))],
    "cli vault rm": [Case("hf_token.delete", cli("vault", "rm", "2"))],
    "cli vault default": [Case("hf_token.default", cli("vault", "default", "2"))],
    "cli vault rotate-key": [Case("vault.rotate_key", cli("vault", "rotate-key"))],
}


def _params() -> list[Any]:
    params = []
    for change in [c for c in console_changes() + cli_commands() if c not in NOT_CHANGES]:
        cases = CASES.get(change) or [None]
        params += [pytest.param(change, case, id=f"{change} {case.action if case else '?'}") for case in cases]
    return params


# -- checking one ---------------------------------------------------------------------------------


def _dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table an admin changes (not the audit log, not the login throttle), as rows."""
    conn = sqlite3.connect(path, timeout=10)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        tables = {}
        for name in names:
            if name in NOT_AUDITED_TABLES or name.startswith(("_yoyo", "yoyo")):
                continue
            cursor = conn.execute(f'SELECT * FROM "{name}"')
            columns = [d[0] for d in cursor.description]
            keep = [i for i, col in enumerate(columns) if col not in VOLATILE]
            tables[name] = sorted((tuple(row[i] for i in keep) for row in cursor), key=repr)
        return tables
    finally:
        conn.close()


def _sql(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=10)
    try:
        with conn:
            return list(conn.execute(sql))
    finally:
        conn.close()


def _refuse_audit(path: Path, refuse: bool) -> None:
    if refuse:
        _sql(path, "CREATE TRIGGER refuse_audit BEFORE INSERT ON admin_audit BEGIN SELECT RAISE(ABORT, 'no'); END")
    else:
        _sql(path, "DROP TRIGGER refuse_audit")


async def _until(check: Callable[[], Any], what: str, seconds: float = 15.0) -> Any:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {seconds:.0f} s")


@pytest.mark.asyncio
@pytest.mark.parametrize(("change", "case"), _params())
async def test_every_admin_change_is_audited_in_its_own_transaction(
    change: str, case: Case | None, local_console: Console
) -> None:
    """issue 20: a change and its audit row are one transaction, for every route and command."""
    assert case is not None, f"{change} changes state: add its case to CASES (or its reason to NOT_CHANGES)"
    if case.setup is not None:
        await case.setup(local_console)
    before = _dump(local_console.db_path)
    if not case.event:
        _refuse_audit(local_console.db_path, True)
        await case.act(local_console)
        await local_console.settled()
        assert case.kept is None or case.kept(local_console), f"{change} was made although its audit row was refused"
        _refuse_audit(local_console.db_path, False)
        assert _dump(local_console.db_path) == before, f"{change} changed state although its audit row was refused"
    last = _sql(local_console.db_path, "SELECT COALESCE(MAX(id), 0) FROM admin_audit")[0][0]
    status = await case.act(local_console)
    assert status < 400, f"{change}: {status} {local_console.said}"
    query = f"SELECT actor, source, action FROM admin_audit WHERE id > {last} AND action = '{case.action}'"
    rows = await _until(lambda: _sql(local_console.db_path, query), f"no {case.action} row for {change}")
    actor, source, _ = rows[0]
    if change.startswith("cli "):
        assert (actor, source) == (f"cli:{getpass.getuser()}", "cli")
    elif not case.event:
        assert actor == "alice" and source == "127.0.0.1", rows
    if not case.event:
        await _until(lambda: _dump(local_console.db_path) != before, f"{change} made no change")


def test_every_case_is_a_route_or_command_that_exists() -> None:
    """A case whose route or command went away is dropped, not kept as dead weight (issue 20)."""
    known = set(console_changes()) | set(cli_commands())
    assert sorted(set(CASES) - known) == [] and sorted(set(NOT_CHANGES) - known) == []
