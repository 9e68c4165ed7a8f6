"""Issue 19: an unexpected failure in the console is its own HTML page with its security headers
(logged with its traceback), or the console's JSON envelope under ``/admin/api``, never aiohttp's
plain text or the proxy's OpenAI envelope. In-process: the console's catch-all route is swapped for
one that raises, standing for any bug."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import admin_ui.app
from admin_ui.app import create_admin_app
from proxy.settings import Settings
from proxy.storage.admin_tokens import AdminTokenRepository
from proxy.storage.database import Database
from proxy.storage.users import UserRepository


async def _bug(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


@pytest.mark.asyncio
async def test_a_bug_is_the_consoles_own_500_page_or_its_json_envelope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(admin_ui.app, "_not_found", _bug)
    settings = Settings(session_key=b"k" * 64, database_path=tmp_path / "app.db")
    async with Database.open(settings.database_path) as db:
        owner = await UserRepository(db).create_user("vera", "argon2-stand-in", "viewer")  # a token acts as its account
        token, _ = await AdminTokenRepository(db).create("script", "viewer", "test", owner.id)
    root = web.Application()
    root.add_subapp("/admin", create_admin_app(settings))
    with caplog.at_level(logging.ERROR, logger="admin_ui.security"):
        async with TestClient(TestServer(root)) as client:
            page = await client.get("/admin/login/no-such-page")  # public: no session needed
            page_text = await page.text()
            api = await client.get("/admin/api/no-such-route", headers={"Authorization": f"Bearer {token}"})
            api_body = await api.json()
    assert page.status == 500 and page.content_type == "text/html"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "<h1>500 Internal Server Error</h1>" in page_text and "a bug" not in page_text
    assert api.status == 500 and api_body == {
        "error": {"status": 500, "message": "something went wrong; it has been logged", "type": "internal_error"}
    }
    assert "frame-ancestors 'none'" in api.headers["Content-Security-Policy"]
    assert sum("RuntimeError: a bug" in (r.exc_text or "") for r in caplog.records) == 2
