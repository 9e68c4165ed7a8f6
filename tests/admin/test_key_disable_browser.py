"""Issue 19: disable and enable, a reversible state beside revoke, in a real headless Chromium against
the real proxy: asked first, refused by every key check within a second, audited, CSRF-guarded.

Screenshots: ``build/test-artifacts/issue19-key-disable-*.png`` at 1280 and 390 px.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
from playwright.sync_api import Page, expect

from proxy.auth.apikey import create_password_hasher, key_minter
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from tests.admin import test_admin_browser as shared
from tests.admin.test_console_auth_browser import shoot
from tests.harness import Proxy

login, admin_url = shared.login, shared.admin_url
browser, pages = shared.browser, shared.pages  # the Chromium fixtures

pytestmark = pytest.mark.timeout(240)


def make_key(proxy: Proxy, name: str) -> tuple[str, int]:
    async def create() -> tuple[str, int]:
        async with Database.open(proxy.db_path) as db:
            full, key = await KeyRepository(db, key_minter(create_password_hasher("test"))).create_key(name)
            return full, key.id

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result()


def seconds_until(works: bool, client: openai.OpenAI) -> float:
    """How long until the key is accepted (``works``) or refused with a 401; fails after 5 s."""
    start = time.monotonic()
    while time.monotonic() - start < 5:
        try:
            client.models.list()
            if works:
                return time.monotonic() - start
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401
            if not works:
                return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"the key did not become {'usable' if works else 'refused'} in 5 s")


def test_an_admin_disables_a_key_and_enables_it_again(console: Proxy, pages: Any, admin_client: Any) -> None:
    """issue 19: a disabled key is refused (401) by the proxy's cached key check within a second, its
    page and the list say "disabled", and enabling it makes the same key work again; both audited."""
    full_key, key_id = make_key(console, "pausable")
    client = openai.OpenAI(base_url=console.base_url, api_key=full_key, max_retries=0)
    assert seconds_until(True, client) < 1  # verified once: now in the proxy's key cache

    forger = admin_client()
    assert forger.login("alice").status_code == 303
    forger.get(f"/api-keys/{key_id}")
    assert forger.post(f"/api-keys/{key_id}/disable", {"confirm": "yes"}, csrf="forged").status_code == 403

    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, f"/api-keys/{key_id}"))
    page.locator("#disable").click()
    expect(page.locator("#confirm")).to_contain_text("until it is enabled again")
    shoot(page, "key-disable-confirm")
    page.get_by_role("button", name="Disable the key").click()
    refused_after = seconds_until(False, client)
    assert refused_after < 1.0, refused_after
    expect(page.locator("#key-state")).to_have_text("disabled")
    shoot(page, "key-disabled")
    page.goto(admin_url(console, "/api-keys?state=disabled"))
    expect(page.locator("#keys tbody tr")).to_have_count(1)
    expect(page.locator("#keys tbody tr")).to_contain_text("pausable")

    page.goto(admin_url(console, f"/api-keys/{key_id}"))
    page.locator("#enable").click()
    expect(page.locator("#key-state")).to_have_text("active")
    assert seconds_until(True, client) < 1.0
    page.goto(admin_url(console, "/audit"))
    expect(page.locator("#audit")).to_contain_text("api_key.disable")
    expect(page.locator("#audit")).to_contain_text("api_key.enable")


def test_disable_and_enable_through_the_json_api(console: Proxy, admin_client: Any) -> None:
    """issue 19: ``POST /admin/api/api-keys/{id}/disable`` and ``/enable`` (admins, with the CSRF header)."""
    full_key, key_id = make_key(console, "scripted")
    client = openai.OpenAI(base_url=console.base_url, api_key=full_key, max_retries=0)
    admin = admin_client()
    assert admin.login("alice").status_code == 303
    admin.get("/")
    headers = {"X-CSRF-Token": admin.csrf}
    assert admin.http.post(f"/api/api-keys/{key_id}/disable").status_code == 403  # no CSRF header
    r = admin.http.post(f"/api/api-keys/{key_id}/disable", headers=headers)
    assert r.status_code == 200 and r.json()["key"]["disabled_at"] is not None
    assert seconds_until(False, client) < 1.0
    listed = admin.get("/api/api-keys", params={"state": "disabled"}).json()["keys"]
    assert [(k["id"], k["state"]) for k in listed] == [(key_id, "disabled")]
    r = admin.http.post(f"/api/api-keys/{key_id}/enable", headers=headers)
    assert r.status_code == 200 and r.json()["key"]["disabled_at"] is None
    assert seconds_until(True, client) < 1.0
