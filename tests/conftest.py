"""Shared fixtures: a real runtime daemon (subprocess, real ZeroMQ, real model)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from proxy.auth.apikey import create_password_hasher, key_minter
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from tests import openapi
from tests.harness import Daemon, Proxy, clean_env, demo_spec, free_port, proxy_env


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-npu", action="store_true", help="run tests that need a Rockchip board")


@pytest.fixture(autouse=True)
def openapi_conformance() -> Iterator[None]:
    """Every OpenAI response body and stream chunk a test receives must match OpenAI's schema (issue 12)."""
    openapi.install()
    openapi.FAILURES.clear()
    yield
    failures, openapi.FAILURES[:] = list(openapi.FAILURES), []
    assert not failures, "responses that do not match OpenAI's OpenAPI document:\n" + "\n".join(failures[:20])


@pytest.fixture
def make_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type[Daemon]]:
    """Build daemons for one test; every one started is stopped afterwards."""
    made: list[Daemon] = []
    short = Path(f"/tmp/llms-{os.getpid()}-{len(made)}")

    def factory(*args: str, queue_depth: int = 8, env: dict[str, str] | None = None) -> Daemon:
        d = tmp_path_factory.mktemp("daemon")
        sock_dir = Path(f"{short}-{len(made)}-{time.monotonic_ns()}")
        sock_dir.mkdir(parents=True)
        full_env = clean_env(d)
        full_env.update(env or {})
        full_env["LLMSERVER_RUNTIME_QUEUE_DEPTH"] = str(queue_depth)
        daemon = Daemon(f"ipc://{sock_dir}/rt.sock", list(args), full_env, d / "daemon.log")
        made.append(daemon)
        return daemon

    yield factory  # type: ignore[misc]
    for daemon in made:
        daemon.kill()
        shutil.rmtree(Path(daemon.endpoint[len("ipc://") :]).parent, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with the demo model (n_threads=2) for the tests that do not stop it."""
    d = tmp_path_factory.mktemp("shared-daemon")
    sock_dir = Path(f"/tmp/llms-shared-{os.getpid()}")
    sock_dir.mkdir(parents=True, exist_ok=True)
    env = clean_env(d)
    env["LLMSERVER_RUNTIME_QUEUE_DEPTH"] = "64"
    # One frame per token, so tests can count tokens as they arrive (test_stream_interval covers the default).
    env["LLMSERVER_RUNTIME_STREAM_INTERVAL_MS"] = "0"
    daemon = Daemon(f"ipc://{sock_dir}/rt.sock", ["--model", demo_spec(n_threads=2)], env, d / "daemon.log")
    daemon.start()
    yield daemon
    daemon.terminate()
    shutil.rmtree(sock_dir, ignore_errors=True)


# -- the proxy ------------------------------------------------------------------------------


@pytest.fixture
def make_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    made: list[Proxy] = []

    def factory(endpoint: str, **env: str) -> Proxy:
        tmp = tmp_path_factory.mktemp("proxy")
        port = free_port()
        full = proxy_env(tmp, endpoint, port)
        full.update(env)
        proxy = Proxy(full, tmp / "app.db", port, tmp / "proxy.log")
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        proxy.kill()


@pytest.fixture(scope="session")
def proxy(shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("shared-proxy")
    port = free_port()
    p = Proxy(proxy_env(tmp, shared_daemon.endpoint, port), tmp / "app.db", port, tmp / "proxy.log").start()
    yield p
    p.stop()


@pytest.fixture
def openai_client() -> Iterator[object]:
    """``openai_client(base_url, key)``: official SDK clients, closed after the test."""
    from openai import OpenAI

    made: list[OpenAI] = []

    def factory(base_url: str, key: str, **kw: object) -> OpenAI:
        kw.setdefault("timeout", 60)
        client = OpenAI(base_url=base_url, api_key=key, max_retries=0, **kw)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


# -- storage ---------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A real, migrated SQLite database in the test's directory."""
    async with Database.open(tmp_path / "app.db") as database:
        yield database


@pytest.fixture
def repo(db: Database) -> KeyRepository:
    """API keys in ``db``, hashed with the fast argon2 test profile."""
    return KeyRepository(db, key_minter(create_password_hasher("test")))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item (``item.rep_call``), so fixtures can see a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
