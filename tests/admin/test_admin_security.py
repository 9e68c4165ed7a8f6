"""Security of the admin console (issue 9): CSRF, revocation, throttling, escaping, tokens, headers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from admin_ui.security import SECURITY_HEADERS
from admin_ui.session import session_valid
from proxy.settings import Settings
from proxy.storage.database import Database
from proxy.storage.users import User
from runtime.api.state import ModelState
from tests.admin.conftest import PASSWORD, AdminClient, add_user, admin_url
from tests.harness import Proxy

PAGES = [
    "/",
    "/api-keys",
    "/reports",
    "/requests",
    "/users",
    "/audit",
    "/account",
    "/tokens",
    "/account/totp",
    "/models",
    "/hf-tokens",
]


def test_login_then_every_page_renders_with_the_security_headers(console: Proxy, admin_client: Any) -> None:
    c: AdminClient = admin_client()
    r = c.get("/login")
    _assert_headers(r)
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
    assert c.login("alice").status_code == 303
    for page in [*PAGES, "/nope", "/static/admin.css", "/api/usage", "/api/requests", "/api/requests.csv"]:
        r = c.get(page)
        assert r.status_code == (404 if page == "/nope" else 200), (page, r.text[:300])
        _assert_headers(r)
    assert "<script>" not in c.get("/").text.replace('<script src="/admin/static/admin.js" defer></script>', "")


def _assert_headers(r: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (r.url, name)
    csp = r.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp


def test_state_changes_need_the_csrf_token(console: Proxy, admin_client: Any) -> None:
    c: AdminClient = admin_client()
    c.login("alice")
    c.get("/api-keys")
    assert c.post("/api-keys", {"name": "no-token"}, csrf="").status_code == 403
    assert c.post("/api-keys", {"name": "wrong-token"}, csrf="x" * 43).status_code == 403
    api = c.http.post("/api/api-keys", json={"name": "json-no-header"})
    assert api.status_code == 403
    api = c.http.post("/api/api-keys", json={"name": "json-header"}, headers={"X-CSRF-Token": c.csrf})
    assert api.status_code == 201, api.text
    assert c.post("/api-keys", {"name": "with-token"}).status_code == 303
    names = [k["name"] for k in c.http.get("/api/api-keys").json()["keys"]]
    assert names == ["with-token", "json-header"]  # the list is newest first
    # The login form is protected too (no login CSRF).
    fresh = AdminClient(console)
    fresh.get("/login")
    assert fresh.post("/login", {"username": "alice", "password": PASSWORD}, csrf="forged").status_code == 403
    fresh.close()


def test_a_cookie_saved_before_logout_password_change_or_disabling_is_refused_after(
    console: Proxy, admin_client: Any
) -> None:
    add_user(console, "bob")
    # Logout.
    c: AdminClient = admin_client()
    c.login("alice")
    saved = c.cookies()
    c.get("/")
    assert c.post("/logout").status_code == 303
    assert _replay(console, saved, "/").status_code == 303  # back to the login page
    assert _replay(console, saved, "/api/api-keys").status_code == 401
    # Password change.
    c.login("alice")
    saved = c.cookies()
    c.get("/account")
    new = "a brand new password"
    r = c.post("/account/password", {"current": PASSWORD, "new": new, "again": new})
    assert "Password changed" in c.follow(r).text
    assert _replay(console, saved, "/").status_code == 303
    assert c.get("/").status_code == 200, "the session that changed the password goes on"
    # Disabling (by another admin).
    b: AdminClient = admin_client()
    b.login("bob")
    saved = b.cookies()
    assert b.get("/").status_code == 200
    users = c.http.get("/api/users").json()["users"]
    bob = next(u for u in users if u["username"] == "bob")
    c.get("/users")
    assert c.post(f"/users/{bob['id']}", {"action": "disable", "confirm": "yes"}).status_code == 303
    assert _replay(console, saved, "/").status_code == 303
    assert b.login("bob").status_code == 401


def _replay(proxy: Proxy, cookies: dict[str, str], path: str) -> httpx.Response:
    with httpx.Client(base_url=admin_url(proxy, ""), cookies=cookies, follow_redirects=False) as fresh:
        return fresh.get(path)


def test_wrong_passwords_are_throttled_alike_for_known_and_unknown_accounts(console: Proxy, admin_client: Any) -> None:
    answers = {}
    for name in ("alice", "nobody"):
        c: AdminClient = admin_client()
        statuses = [c.login(name, "wrong password!").status_code for _ in range(4)]
        r = c.login(name, "wrong password!")
        answers[name] = (statuses, r.status_code, _normal(_main(r.text)))
    assert answers["alice"] == answers["nobody"]
    statuses, last, text = answers["alice"]
    assert statuses[:3] == [401, 401, 401] and last == 429 and "Too many failed attempts" in text
    # Even the right password waits now.
    assert admin_client().login("alice").status_code == 429
    # Per address too: one client trying many names is slowed down after ten failures (six so far).
    other: AdminClient = admin_client()
    assert [other.login(f"user{i}", "wrong password!").status_code for i in range(6)] == [401] * 4 + [429] * 2


def _normal(html: str) -> str:
    return re.sub(r'value="[^"]+"', "", re.sub(r"\d+ seconds", "N seconds", html))


def _main(html: str) -> str:
    return html[html.index("<main") : html.index("</main>")]


def test_a_key_name_with_script_is_shown_as_text(console: Proxy, admin_client: Any) -> None:
    c: AdminClient = admin_client()
    c.login("alice")
    c.get("/api-keys")
    evil = "<script>alert(1)</script>"
    r = c.follow(c.post("/api-keys", {"name": evil}))
    assert evil not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    for page in ("/api-keys", "/audit", "/api-keys/1"):
        body = c.get(page).text
        assert evil not in body, page
        assert ("\\u003cscript\\u003e" if page == "/audit" else "&lt;script&gt;") in body, page


def test_the_admin_api_needs_a_session_or_a_token_and_a_viewer_token_cannot_write(
    console: Proxy, admin_client: Any
) -> None:
    anonymous = httpx.get(admin_url(console, "/api/api-keys"))
    assert anonymous.status_code == 401 and anonymous.json()["error"]["status"] == 401
    assert httpx.get(admin_url(console, "/usage")).status_code == 401
    c: AdminClient = admin_client()
    c.login("alice")
    tokens = {}
    for scope in ("viewer", "admin"):
        c.get("/tokens")
        assert c.post("/tokens", {"name": f"{scope} script", "scope": scope, "current": PASSWORD}).status_code == 303
        page = c.get("/tokens").text  # shown once, on the page the form redirects to
        tokens[scope] = re.search(r'id="full-token">(llmsadm_\w+)<', page).group(1)  # type: ignore[union-attr]
    viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    assert httpx.get(admin_url(console, "/api/api-keys"), headers=viewer).status_code == 200
    assert httpx.get(admin_url(console, "/usage"), headers=viewer).status_code == 200
    write = httpx.post(admin_url(console, "/api/api-keys"), headers=viewer, json={"name": "nope"})
    assert write.status_code == 403
    made = httpx.post(admin_url(console, "/api/api-keys"), headers=admin, json={"name": "scripted", "token_limit": 9})
    assert made.status_code == 201 and made.json()["full_key"].startswith("llms_")
    assert (
        httpx.get(admin_url(console, "/api/api-keys"), headers={"Authorization": "Bearer llmsadm_x_y"}).status_code
        == 401
    )
    assert httpx.get(admin_url(console, "/"), headers=admin, follow_redirects=False).status_code == 401
    entries = httpx.get(admin_url(console, "/api/audit"), headers=admin).json()["entries"]
    created = next(e for e in entries if e["action"] == "api_key.create")
    assert created["actor"] == "token:admin script" and created["source"] == "127.0.0.1"
    assert "secret_hash" not in str(entries) and made.json()["full_key"] not in str(entries)


def test_sessions_end_after_the_idle_and_the_absolute_timeout() -> None:
    settings = Settings(session_idle_timeout=60, session_max_age=3600)
    user = User(1, "a", "admin", False, 3, 0.0, None, password_hash="x")
    start = 1_000_000.0
    session = {"uid": 1, "epoch": 3, "created": start, "seen": start}
    assert session_valid(session, user, settings, start + 59)  # type: ignore[arg-type]
    assert not session_valid(session, user, settings, start + 61)  # type: ignore[arg-type]
    session["seen"] = start + 3590
    assert session_valid(session, user, settings, start + 3599)  # type: ignore[arg-type]
    assert not session_valid(session, user, settings, start + 3601)  # type: ignore[arg-type]
    assert not session_valid({**session, "epoch": 2}, user, settings, start + 3599)  # type: ignore[arg-type]


def test_the_console_refuses_to_start_with_a_malformed_session_key(make_proxy: Any, shared_daemon: Any) -> None:
    proxy: Proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_SESSION_KEY="abc")
    try:
        proxy.start(timeout=10)
    except RuntimeError as exc:
        assert "LLMSERVER_SESSION_KEY" in str(exc) and "abc" not in str(exc).split("LLMSERVER_SESSION_KEY", 1)[1][:40]
    else:
        raise AssertionError("a malformed LLMSERVER_SESSION_KEY must stop start-up")


class _NoRuntime:
    async def models(self) -> list[ModelState]:
        raise ConnectionError("no runtime here")


@pytest.mark.asyncio
async def test_the_session_cookie_is_secure_when_tls_is_on(db: Database) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from admin_ui.app import create_admin_app

    settings = Settings(session_key=b"s" * 64, tls_cert=Path("cert.pem"), tls_key=Path("key.pem"))
    root = web.Application()
    root.add_subapp("/admin", create_admin_app(settings, db=lambda: db, runtime=_NoRuntime))
    async with TestClient(TestServer(root)) as client:
        r = await client.get("/admin/login")
        cookie = r.headers["Set-Cookie"]
    assert r.status == 200
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"  # issue 19: HSTS with the proxy's own TLS
