"""The admin console in a real headless Chromium (Debian's, driven by playwright), issue 9.

A failing test leaves a screenshot and the page's HTML in ``build/test-artifacts/`` (or
``$LLMSERVER_TEST_ARTIFACTS``) so CI failures can be looked at.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.admin.conftest import PASSWORD, add_user, admin_url
from tests.harness import ROOT, Proxy

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("LLMSERVER_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
HELLO = [{"role": "user", "content": "Say hello."}]
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``pages()``: a new page in its own browser context (own cookies); screenshots on failure."""
    made: list[Page] = []

    def factory(phone: bool = False) -> Page:
        context = browser.new_context(viewport=PHONE if phone else None)  # type: ignore[arg-type]
        page = context.new_page()
        page.set_default_timeout(15_000)
        made.append(page)
        return page

    yield factory
    failed = getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed
    for i, page in enumerate(made):
        if failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            stem = ARTIFACTS / f"{request.node.name}-{i}"
            page.screenshot(path=f"{stem}.png", full_page=True)
            Path(f"{stem}.html").write_text(page.content())
        page.context.close()


def login(page: Page, proxy: Proxy, name: str, password: str = PASSWORD) -> None:
    page.goto(admin_url(proxy, "/"))
    expect(page).to_have_url(re.compile(r"/admin/login"))
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_an_admin_creates_a_key_uses_it_sees_it_and_revokes_it(console: Proxy, pages: Any, openai_client: Any) -> None:
    page: Page = pages()
    login(page, console, "alice")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("link", name="API keys").click()
    form = page.locator("#create-key")
    form.get_by_label("Name").fill("browser key")
    form.get_by_label("Token limit").fill("5000")
    form.get_by_label("Budget period").select_option("daily")
    form.get_by_label("smollm2").check()
    form.get_by_role("button", name="Create key").click()
    key = page.locator("#full-key").inner_text().strip()
    assert re.fullmatch(r"llms_\w{12}_\w{32}", key)
    client = openai_client(console.base_url, key)
    reply = client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=4)
    assert reply.usage is not None
    used = reply.usage.total_tokens
    page.get_by_role("link", name="Usage").click()
    row = page.locator("#usage-keys tr", has_text="browser key")
    expect(row).to_contain_text(str(used))
    expect(page.locator("#usage-requests")).to_have_text("1")
    # Every day of the default 30 is a column (issue 19: with its hover title), only today's has a bar.
    columns = page.get_by_role("img", name="Requests per day").locator("g.col")
    expect(columns).to_have_count(30)
    assert [c.locator("rect.s-requests").count() for c in columns.all()].count(0) == 29
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#today-requests")).to_have_text("1")
    expect(page.locator("#models")).to_contain_text("smollm2")
    expect(page.locator("#npu")).to_contain_text("no NPU")
    shown = page.locator("#updated").inner_text()
    expect(page.locator("#updated")).not_to_have_text(shown, timeout=15_000)  # refreshed live by admin.js
    page.get_by_role("link", name="API keys").click()
    page.get_by_role("link", name="browser key").click()
    expect(page.locator("#key-requests")).to_have_text("1")
    page.locator("#revoke").click()
    page.get_by_role("button", name="Revoke the key").click()  # the second step (issue 19)
    expect(page.locator("#keys")).to_contain_text("revoked")
    deadline = time.monotonic() + 5
    while True:  # revocation reaches the proxy's key cache within a second
        try:
            client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=1)
        except openai.AuthenticationError as exc:
            assert exc.status_code == 401
            break
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)
    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("#audit")).to_contain_text("api_key.revoke")


def test_a_viewer_cannot_create_a_key(console: Proxy, pages: Any) -> None:
    add_user(console, "victor", role="viewer")
    page: Page = pages(phone=True)  # and the pages work on a phone-sized screen
    login(page, console, "victor")
    page.get_by_text("Menu", exact=True).click()  # on a phone the links are behind the menu (issue 19)
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    expect(page.locator("#create-key")).to_have_count(0)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    # Even a request made by hand from the viewer's page, with its CSRF token, is refused.
    status = page.evaluate(
        """async () => {
            const csrf = document.querySelector('input[name=csrf]').value;
            const r = await fetch('/admin/api-keys', {method: 'POST',
                body: new URLSearchParams({csrf: csrf, name: 'sneaky'})});
            return r.status;
        }"""
    )
    assert status == 403
    assert console.query("SELECT COUNT(*) FROM api_keys WHERE name = 'sneaky'") == [(0,)]


def test_totp_enrolment_and_login_with_a_code(console: Proxy, pages: Any) -> None:
    page: Page = pages()
    login(page, console, "alice")
    page.get_by_role("link", name=re.compile("alice")).click()
    page.locator("#enrol-totp").click()
    expect(page.get_by_alt_text("QR code of the TOTP secret")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text().strip()
    enrol_code = pyotp.TOTP(secret).now()
    page.get_by_label("Code shown by the app").fill(enrol_code)
    page.locator("#totp-enrol").get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Turn on two-factor login").click()
    expect(page.locator("#totp-state")).to_have_text("on")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10
    page.get_by_role("button", name="Log out").click()
    # Password alone is not enough any more.
    login(page, console, "alice")
    expect(page).to_have_url(re.compile(r"/admin/login/totp$"))
    page.get_by_label(re.compile("Code from your authenticator")).fill(
        "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
    )
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong")
    # A code is good once (RFC 6238 5.2): the enrolment's code, still inside its window, is refused.
    page.get_by_label(re.compile("Code from your authenticator")).fill(enrol_code)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong")
    next_code = pyotp.TOTP(secret).at(time.time() + 30)  # the next step's, accepted for clock drift
    page.get_by_label(re.compile("Code from your authenticator")).fill(next_code)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    # ...and once only: after logging out, the same code does not open a session again.
    page.get_by_role("button", name="Log out").click()
    login(page, console, "alice")
    page.get_by_label(re.compile("Code from your authenticator")).fill(next_code)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong")
    # A recovery code works once.
    page.get_by_label(re.compile("Code from your authenticator")).fill(codes[0])
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
