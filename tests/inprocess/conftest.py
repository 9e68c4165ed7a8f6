"""The whole proxy app in-process against a scripted runtime and a real SQLite file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import AppRunner, BaseRunner

from proxy.app import create_app
from proxy.appkeys import lifecycle_key, metrics_key
from proxy.ops.warmup import warmup_key
from proxy.settings import Settings
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from tests.fake_runtime import FakeRuntime, FakeStream


@dataclass
class InProcess:
    """A running app: ``http`` is an aiohttp client bound to it; ``runtime`` its scripted fake."""

    http: TestClient[Any, Any]
    server: TestServer
    runtime: FakeRuntime
    db: Database
    repo: KeyRepository

    async def key(self, **limits: Any) -> tuple[str, int]:
        full, row = await self.repo.create_key("inproc", **limits)
        return full, row.id

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        import sqlite3

        conn = sqlite3.connect(self.db.path, timeout=10)
        try:
            return list(conn.execute(sql, args))
        finally:
            conn.close()

    async def settled(self) -> None:
        """Wait for the start-up work: the reconciler's first pass registered the fake's models (as the
        real daemon's ``--model`` ones are) and the warm-up is done (``/readyz`` is 200), so a test
        starts from the same state every time, however loaded the machine."""
        store = self.server.app[lifecycle_key].registry.store
        for _ in range(500):
            if {r.name for r in await store.list()} >= set(self.runtime.scripts):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the reconciler did not register the fake runtime's models")
        await asyncio.wait_for(self.server.app[warmup_key].done.wait(), 60)

    def requests(self) -> list[FakeStream]:
        """The runtime streams of client requests (not the proxy's one-token warm-up at start)."""
        return [s for s in self.runtime.streams if s.params.max_tokens > 1]

    def ledger_failures(self) -> float:
        return float(self.server.app[metrics_key].ledger_failures._value.get())  # type: ignore[index]


class ProductionLikeServer(TestServer):
    """As in production (llmserver/serve.py): a handler is not cancelled when its client leaves; one
    still running at shutdown is cancelled soon."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        kwargs.update(handler_cancellation=False, shutdown_timeout=0.5)
        return AppRunner(self.app, **kwargs)


@pytest_asyncio.fixture
async def app(db: Database, repo: KeyRepository, tmp_path: Path) -> AsyncIterator[InProcess]:
    settings = Settings(database_path=tmp_path / "app.db", argon2_profile="test", max_body_bytes=8 << 20)
    runtime = FakeRuntime()
    server = ProductionLikeServer(create_app(settings, runtime=runtime, db=db))
    async with TestClient(server) as http:
        app = InProcess(http, server, runtime, db, repo)
        await app.settled()
        yield app
