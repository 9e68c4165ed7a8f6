"""Issue 19, "a failed form keeps what was typed and shows the error beside the field", in a real
headless Chromium, for the forms that did not: the login form forgot the user name, the account's
"passwords differ" stood beside the first new password instead of the second, the Hugging Face
token form forgot "use as the default", and a refused action in a user's row said so only at the
top of the page, away from the row. (The key forms, the user and token create forms and the TOTP
forms are covered in ``test_admin_input_browser`` and ``test_console_auth_browser``.)

Passwords and tokens are never typed back into a form: they must not ride in the session cookie.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.admin import test_admin_browser as shared
from tests.admin.conftest import PASSWORD, SESSION_KEY, add_user, admin_url
from tests.harness import Daemon, Proxy

login = shared.login
browser, pages = shared.browser, shared.pages  # the Chromium fixtures

pytestmark = pytest.mark.timeout(240)


def test_a_refused_login_keeps_the_user_name(console: Proxy, pages: Any) -> None:
    """issue 19: after a wrong password the login form came back empty; it keeps the user name
    (never the password) and puts the cursor on the password."""
    page: Page = pages()
    login(page, console, "alice", "not the password")
    expect(page.get_by_role("alert")).to_contain_text("Wrong user name, password or code")
    expect(page.get_by_label("User name")).to_have_value("alice")
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page.get_by_label("Password")).to_be_focused()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_passwords_that_differ_are_refused_beside_the_second(console: Proxy, pages: Any) -> None:
    """issue 19: "the two passwords differ" stood beside "New password", which was right."""
    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, "/account"))
    form = page.locator("form[action='/admin/account/password']")
    form.get_by_label("Current password").fill(PASSWORD)
    form.get_by_label("New password (12 characters or more)").fill("orange tractor meadow 42")
    form.get_by_label("New password again").fill("orange tractor meadow 24")
    form.get_by_role("button", name="Change password").click()
    again = page.locator("input[name=again]")
    expect(page.locator("#again-error")).to_have_text("the two passwords differ")
    expect(again).to_have_attribute("aria-invalid", "true")
    expect(page.locator("input[name=new]")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#new-error")).to_have_count(0)
    # A weak password is still refused beside the new password itself.
    form.get_by_label("Current password").fill(PASSWORD)
    form.get_by_label("New password (12 characters or more)").fill("password1234")
    form.get_by_label("New password again").fill("password1234")
    form.get_by_role("button", name="Change password").click()
    expect(page.locator("#new-error")).to_contain_text("common passwords")
    expect(page.locator("#again-error")).to_have_count(0)


@pytest.fixture
def vaulted(make_proxy: Any, shared_daemon: Daemon) -> Proxy:
    """A console that can store Hugging Face tokens (it has an encryption key)."""
    proxy: Proxy = make_proxy(
        shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_ENCRYPTION_KEY="ef" * 32
    ).start()
    add_user(proxy, "alice")
    return proxy


def test_a_refused_hugging_face_token_keeps_the_label_and_the_default_choice(vaulted: Proxy, pages: Any) -> None:
    """issue 19: a refused token came back with its label but "use as the default" unticked."""
    page: Page = pages()
    login(page, vaulted, "alice")
    page.goto(admin_url(vaulted, "/hf-tokens"))
    form = page.locator("#add-token")
    form.get_by_label("Label").fill("team token")
    form.get_by_label("Token", exact=True).fill("hf_has a space in it")
    form.get_by_label("Use as the default token").check()
    form.get_by_role("button", name="Store token").click()
    expect(page.locator("#token-error")).to_contain_text("without spaces")
    token = form.locator("input[name=token]")  # its label now holds the error too
    expect(token).to_have_attribute("aria-invalid", "true")
    expect(token).to_have_value("")  # never typed back
    expect(form.get_by_label("Label")).to_have_value("team token")
    expect(form.get_by_label("Use as the default token")).to_be_checked()
    assert vaulted.query("SELECT COUNT(*) FROM huggingface_tokens") == [(0,)]
    page.reload()  # the flash was for one page
    expect(page.locator("#add-token").get_by_label("Use as the default token")).not_to_be_checked()


def test_a_refused_user_action_is_said_in_that_users_row(console: Proxy, pages: Any) -> None:
    """issue 19: "Reset password" on one's own row was refused at the top of the page only."""
    add_user(console, "vera", role="viewer")
    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, "/users"))
    mine = page.get_by_role("row", name=re.compile(r"^alice"))
    mine.get_by_role("button", name="Reset password").click()
    mine = page.get_by_role("row", name=re.compile(r"^alice"))
    expect(mine.locator(".field-error")).to_contain_text("change your own password on your Account page")
    expect(page.get_by_role("row", name=re.compile(r"^vera")).locator(".field-error")).to_have_count(0)
    page.get_by_role("row", name=re.compile(r"^alice")).get_by_role("button", name="Make viewer").click()
    expect(page.get_by_role("row", name=re.compile(r"^alice")).locator(".field-error")).to_contain_text(
        "you cannot disable yourself or change your own role"
    )
