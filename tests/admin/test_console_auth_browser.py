"""Issue 19, the console's authentication holes, in a real headless Chromium.

A link from another site no longer logs the admin out; the TOTP QR code renders; enrolling asks
for the current password; an account with a generated password must choose its own first; the
pages' background polling does not keep an idle session alive. Screenshots of the pages changed
here go to ``build/test-artifacts/`` at 1280 and 390 px.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pyotp
import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Page, expect

from admin_ui.session import COOKIE_NAME, cookie_key
from tests.admin import test_admin_browser as shared
from tests.admin.conftest import PASSWORD, SESSION_KEY, add_user, admin_url
from tests.harness import Proxy

ARTIFACTS, PHONE, login = shared.ARTIFACTS, shared.PHONE, shared.login
browser, pages = shared.browser, shared.pages  # the Chromium fixtures

pytestmark = pytest.mark.timeout(180)


def shoot(page: Page, name: str) -> None:
    """The page at 1280 px and at 390 px (a phone), whole, into the test artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width, height in ((1280, 900), (PHONE["width"], PHONE["height"])):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(ARTIFACTS / f"issue19-{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


@pytest.fixture
def other_site() -> Iterator[Any]:
    """``serve(html)``: a page on another site (``localhost``, while the console is ``127.0.0.1``)."""
    body: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body["html"])

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(html: str) -> str:
        body["html"] = html.encode()
        return f"http://localhost:{server.server_address[1]}/"

    yield serve
    server.shutdown()
    server.server_close()


def test_a_link_from_another_site_does_not_log_the_admin_out(console: Proxy, pages: Any, other_site: Any) -> None:
    """issue 19: with SameSite=Strict the browser withheld the cookie and the login page overwrote it."""
    page: Page = pages()
    login(page, console, "alice")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    target = admin_url(console, "/api-keys")
    page.goto(other_site(f'<!doctype html><title>chat</title><a id="go" href="{target}">the keys</a>'))
    page.locator("#go").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()  # the link opens the page itself
    page.go_back()
    expect(page).to_have_title("chat")
    page.goto(admin_url(console, "/"))
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    # A cross-site form posted at the login page (no cookie goes with it) answers 403 and replaces nothing.
    forged = (
        f'<form id="f" method="post" action="{admin_url(console, "/login")}"><input name="username" value="x"></form>'
    )
    page.goto(other_site(f"<!doctype html><title>forged</title>{forged}"))
    page.locator("#f").evaluate("f => f.submit()")
    expect(page.locator("main")).to_contain_text("CSRF")
    page.goto(admin_url(console, "/"))
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_the_totp_qr_code_renders_and_enrolling_asks_for_the_password(console: Proxy, pages: Any) -> None:
    """issue 19: the QR code never rendered (an SVG without its namespace); enrolling needed no password."""
    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, "/account/totp"))
    qr = page.get_by_alt_text("QR code of the TOTP secret")
    expect(qr).to_be_visible()
    decoded = qr.evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight], e => String(e))")
    assert isinstance(decoded, list) and decoded[0] > 50 and decoded[0] == decoded[1], decoded
    box = qr.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50
    shoot(page, "account-totp")
    secret = page.locator("#totp-secret").inner_text().strip()
    enrol = page.locator("#totp-enrol")
    enrol.get_by_label("Code shown by the app").fill(pyotp.TOTP(secret).now())
    enrol.get_by_label("Current password").fill("not my password at all")
    enrol.get_by_role("button", name="Turn on two-factor login").click()
    expect(page.get_by_role("alert")).to_contain_text("current password is wrong")
    expect(page.locator("#totp-state")).to_have_text("off")
    assert page.locator("#totp-secret").inner_text().strip() == secret, "the same secret, to try again"
    enrol = page.locator("#totp-enrol")
    enrol.get_by_label("Code shown by the app").fill(pyotp.TOTP(secret).now())
    enrol.get_by_label("Current password").fill(PASSWORD)
    enrol.get_by_role("button", name="Turn on two-factor login").click()
    expect(page.locator("#totp-state")).to_have_text("on")
    expect(page.locator("#replace-totp")).to_be_visible()
    shoot(page, "account-totp-on")


def test_a_generated_password_must_be_replaced_at_first_login(console: Proxy, pages: Any) -> None:
    """issue 19: an account created with a generated password never had to change it."""
    admin: Page = pages()
    login(admin, console, "alice")
    admin.get_by_role("link", name="Users").click()
    admin.get_by_label("User name").fill("gina")
    admin.get_by_label("Role").select_option("admin")
    admin.get_by_role("button", name=re.compile("Create")).click()
    generated = admin.locator("#shown-password").inner_text().strip()
    page: Page = pages(phone=True)
    login(page, console, "gina", generated)
    expect(page).to_have_url(re.compile(r"/admin/account$"))
    shown = admin.get_by_role("status").filter(has=admin.locator("#shown-password"))  # beside "user gina created"
    expect(shown).to_contain_text("they must replace it at their first login")
    expect(admin.get_by_role("row", name=re.compile("gina"))).to_contain_text("must choose a password")
    shoot(admin, "users-created")
    expect(page.locator("#must-change")).to_be_visible()
    page.goto(admin_url(console, "/api-keys"))
    expect(page).to_have_url(re.compile(r"/admin/account$"))
    shoot(page, "account-must-change")
    form = page.locator("form[action='/admin/account/password']")
    for weak in (" " * 12, "password1234"):
        form.get_by_label("Current password").fill(generated)
        form.get_by_label("New password (12 characters or more)").fill(weak)
        form.get_by_label("New password again").fill(weak)
        form.get_by_role("button", name="Change password").click()
        expect(page.get_by_role("alert")).to_be_visible()
    expect(page.locator("#must-change")).to_be_visible()
    own = "gina's own long passphrase"
    form.get_by_label("Current password").fill(generated)
    form.get_by_label("New password (12 characters or more)").fill(own)
    form.get_by_label("New password again").fill(own)
    form.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status")).to_contain_text("Password changed")
    expect(page.locator("#must-change")).to_have_count(0)
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    admin.goto(admin_url(console, "/users"))
    expect(admin.get_by_role("row", name=re.compile("gina"))).not_to_contain_text("must choose")


def _seen(page: Page) -> float:
    """The session's last-activity stamp, read from its encrypted cookie (the test knows the key)."""
    (cookie,) = [c for c in page.context.cookies() if c["name"] == COOKIE_NAME]
    box = Fernet(base64.urlsafe_b64encode(cookie_key(bytes.fromhex(SESSION_KEY))))
    return float(json.loads(box.decrypt(cookie["value"].encode()))["session"]["seen"])


def test_background_polling_does_not_keep_an_idle_session_alive(console: Proxy, pages: Any) -> None:
    """issue 19: the dashboard's and models page's polling refreshed the idle timeout forever."""
    page: Page = pages()
    login(page, console, "alice")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    models = page.context.new_page()
    models.goto(admin_url(console, "/models"))
    polls: list[int] = []
    for p in (page, models):
        p.on("response", lambda r: polls.append(r.status) if "/admin/api/" in r.url else None)
    seen = _seen(page)
    page.wait_for_timeout(
        21_000
    )  # the stamp is rewritten at most every 15 s: polls at 5 s (dashboard) and 1 s (models)
    assert len(polls) >= 15 and set(polls) == {200}, polls
    assert _seen(page) == seen, "a background poll counted as activity"
    page.reload()  # a real visit does count
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    assert _seen(page) > seen + 15
    models.close()


def test_the_tokens_page_asks_for_the_password_and_shows_owner_and_expiry(console: Proxy, pages: Any) -> None:
    """issue 19: making a token needs the current password; the list says whose it is and when it ends."""
    add_user(console, "hugo", role="viewer")
    page: Page = pages()
    login(page, console, "alice")
    page.get_by_role("link", name="API tokens").click()
    form = page.locator("#create-token")
    form.get_by_label("Name").fill("nightly backup")
    form.get_by_label("Expires").select_option("30")
    form.get_by_label("Your current password").fill("not the password")
    form.get_by_role("button", name="Create token").click()
    expect(page.get_by_role("alert")).to_contain_text("current password is wrong")
    expect(page.locator("#full-token")).to_have_count(0)
    form = page.locator("#create-token")
    form.get_by_label("Name").fill("nightly backup")
    form.get_by_label("Expires").select_option("30")
    form.get_by_label("Your current password").fill(PASSWORD)
    form.get_by_role("button", name="Create token").click()
    expect(page.locator("#full-token")).to_have_text(re.compile(r"llmsadm_\w{12}_\w{32}"))
    row = page.locator("#tokens tr", has_text="nightly backup")
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text("active")
    shoot(page, "tokens")


def test_behind_a_tls_proxy_the_browser_keeps_a_secure_session_cookie(
    make_proxy: Any, shared_daemon: Any, pages: Any
) -> None:
    """issue 19: behind a TLS-terminating reverse proxy the session cookie never got ``Secure``."""
    behind: Proxy = make_proxy(
        shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_TRUSTED_PROXIES="127.0.0.1"
    ).start()
    add_user(behind, "alice")
    page: Page = pages()
    page.context.set_extra_http_headers({"X-Forwarded-Proto": "https"})  # what the proxy in front adds
    hsts: list[str | None] = []
    page.on("response", lambda r: hsts.append(r.headers.get("strict-transport-security")))
    login(page, behind, "alice")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    (session,) = [c for c in page.context.cookies() if c["name"] == COOKIE_NAME]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"
    assert hsts and set(hsts) == {"max-age=31536000"}
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
