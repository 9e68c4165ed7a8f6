"""Issue 19, the console's authentication holes, through its HTTP and JSON API on a real proxy process.

Admin API tokens act as their account (current role, disabled account, expiry, JSON list and
revoke), re-authentication before account changes, ``Secure`` cookies and HSTS behind a
TLS-terminating reverse proxy, passwords chosen by someone else replaced at first login, the
password policy, and the Hugging Face token list for admins only. The pages are in
``test_console_auth_browser.py``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pyotp
import pytest
from cryptography.fernet import Fernet

from admin_ui.passwords import check_password
from admin_ui.session import COOKIE_NAME, cookie_key
from proxy.storage.admin_tokens import AdminTokenRepository
from proxy.storage.database import Database
from proxy.storage.errors import ValidationError
from proxy.storage.migrate import MIGRATIONS_DIR, apply_migrations
from proxy.storage.users import UserRepository
from tests.admin.conftest import PASSWORD, SESSION_KEY, AdminClient, add_user, admin_url
from tests.harness import Daemon, Proxy


def _write(proxy: Proxy, sql: str, args: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(proxy.db_path, timeout=10)
    try:
        with conn:
            conn.execute(sql, args)
    finally:
        conn.close()


def _api(c: AdminClient, method: str, path: str, **kw: Any) -> httpx.Response:
    """A JSON API call from a browser session (with the CSRF header a page would send)."""
    c.get("/")
    return c.http.request(method, path, headers={"X-CSRF-Token": c.csrf}, **kw)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _make_token(c: AdminClient, scope: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    r = _api(
        c,
        "POST",
        "/api/tokens",
        json={"name": f"{scope} script", "scope": scope, "current_password": PASSWORD, **extra},
    )
    assert r.status_code == 201, r.text
    return r.json()["full_token"], r.json()["token"]


def test_a_token_acts_with_its_accounts_current_role_and_stops_with_the_account(
    console: Proxy, admin_client: Any
) -> None:
    """issue 19: a token made by an admin who is then demoted or disabled kept full power."""
    dora = add_user(console, "dora")
    d: AdminClient = admin_client()
    d.login("dora")
    d.get("/tokens")
    page = d.follow(d.post("/tokens", {"name": "dora's script", "scope": "admin", "current": PASSWORD})).text
    full = page.split('id="full-token">')[1].split("<")[0]
    url = admin_url(console, "/api/api-keys")
    assert httpx.post(url, headers=_bearer(full), json={"name": "while admin"}).status_code == 201
    a: AdminClient = admin_client()
    a.login("alice")
    assert _api(a, "PATCH", f"/api/users/{dora}", json={"action": "role", "role": "viewer"}).status_code == 200
    # Demoted: the admin-scoped token reads, and writes nothing any more.
    assert httpx.get(url, headers=_bearer(full)).status_code == 200
    refused = httpx.post(url, headers=_bearer(full), json={"name": "after demotion"})
    assert refused.status_code == 403
    assert _api(a, "PATCH", f"/api/users/{dora}", json={"action": "role", "role": "admin"}).status_code == 200
    assert httpx.post(url, headers=_bearer(full), json={"name": "promoted again"}).status_code == 201
    # Disabled: the token is refused, so it cannot re-enable its own account, and it is revoked for good.
    assert _api(a, "PATCH", f"/api/users/{dora}", json={"action": "disable"}).status_code == 200
    enable = httpx.patch(admin_url(console, f"/api/users/{dora}"), headers=_bearer(full), json={"action": "enable"})
    assert enable.status_code == 401
    assert console.query("SELECT disabled FROM users WHERE id = ?", (dora,)) == [(1,)]
    assert console.query("SELECT revoked_at IS NOT NULL FROM admin_tokens WHERE user_id = ?", (dora,)) == [(1,)]
    assert _api(a, "PATCH", f"/api/users/{dora}", json={"action": "enable"}).status_code == 200
    assert httpx.get(url, headers=_bearer(full)).status_code == 401, "re-enabling does not bring the token back"
    names = [k["name"] for k in httpx.get(url, headers=_bearer(_make_token(a, "viewer")[0])).json()["keys"]]
    assert names == ["promoted again", "while admin"]  # the list is newest first
    row = _api(a, "GET", "/api/tokens").json()["tokens"][0]
    assert row["owner"] == "dora" and row["user_id"] == dora and row["expires_at"] is None
    assert "secret_hash" not in str(row) and full.split("_")[2] not in str(row)


def test_tokens_expire_and_are_listed_and_revoked_through_the_json_api(console: Proxy, admin_client: Any) -> None:
    """issue 19: tokens get an optional expiry; list and revoke them in the JSON API (audited, CSRF)."""
    a: AdminClient = admin_client()
    a.login("alice")
    short, short_row = _make_token(a, "viewer", expires_in_days=1)
    assert 86_000 < short_row["expires_at"] - short_row["created_at"] <= 86_400
    lasting, lasting_row = _make_token(a, "admin")
    listed = _api(a, "GET", "/api/tokens").json()["tokens"]
    assert [t["id"] for t in listed] == [short_row["id"], lasting_row["id"]]
    assert httpx.get(admin_url(console, "/api/tokens"), headers=_bearer(short)).status_code == 403  # a viewer's
    assert httpx.get(admin_url(console, "/api/tokens"), headers=_bearer(lasting)).status_code == 200
    _write(console, "UPDATE admin_tokens SET expires_at = ? WHERE id = ?", (1.0, short_row["id"]))
    expired = httpx.get(admin_url(console, "/api/api-keys"), headers=_bearer(short))
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    # Revoking: a session needs the CSRF header; a token does not (it is not ambient).
    revoke = f"/api/tokens/{lasting_row['id']}/revoke"
    assert a.http.post(revoke).status_code == 403
    other, _ = _make_token(a, "admin")
    revoked = httpx.post(admin_url(console, revoke), headers=_bearer(other))
    assert revoked.status_code == 200 and revoked.json()["token"]["revoked_at"] is not None
    assert httpx.get(admin_url(console, "/api/api-keys"), headers=_bearer(lasting)).status_code == 401
    for missing in ("999", "9" * 30):
        assert (
            httpx.post(admin_url(console, f"/api/tokens/{missing}/revoke"), headers=_bearer(other)).status_code == 404
        )
    # A token cannot make tokens (a leaked one would outlive its revocation); a session must give the password.
    minted = httpx.post(admin_url(console, "/api/tokens"), headers=_bearer(other), json={"name": "x"})
    assert minted.status_code == 403
    for body in (
        {"name": "x", "scope": "viewer"},
        {"name": "x", "current_password": "not the password"},
        {"name": "x", "current_password": PASSWORD, "expires_in_days": 0},
        {"name": "x", "current_password": PASSWORD, "expires_in_days": "30"},
        {"name": "x", "current_password": PASSWORD, "expires_in_days": 10**6},
        {"name": "x", "current_password": PASSWORD, "scope": "root"},
        {"name": "", "current_password": PASSWORD},
        {"name": "x", "current_password": PASSWORD, "owner": 1},
    ):
        r = _api(a, "POST", "/api/tokens", json=body)
        assert r.status_code == 400 and r.json()["error"]["message"], (body, r.text)
    for raw in (b"[" * 5000, b"\xff", b"[]"):  # nested past the parser's depth, not UTF-8, not an object
        a.get("/")
        headers = {"X-CSRF-Token": a.csrf, "Content-Type": "application/json"}
        r = a.http.post("/api/tokens", content=raw, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["status"] == 400, (raw[:10], r.status_code, r.text[:200])
    assert len(_api(a, "GET", "/api/tokens").json()["tokens"]) == 3
    actions = [e["action"] for e in _api(a, "GET", "/api/audit").json()["entries"]]
    assert actions.count("admin_token.create") == 3 and actions.count("admin_token.revoke") == 1
    assert "reauth.failed" in actions


def test_a_lone_surrogate_in_a_password_or_any_json_field_is_a_400_every_time(
    console: Proxy, admin_client: Any
) -> None:
    """issue 19 (the admin fuzzer): ``"current_password": "\\ud800"`` reached argon2, whose UTF-8 encoding
    raised: a 500 on the first try (later tries met the login throttle first, so it came and went)."""
    a: AdminClient = admin_client()
    a.login("alice")
    a.get("/")
    headers = {"X-CSRF-Token": a.csrf, "Content-Type": "application/json"}
    bodies = [
        ("/api/tokens", b'{"name": "x", "scope": "viewer", "current_password": "\\ud800"}'),
        ("/api/tokens", b'{"name": "x", "scope": "viewer", "current_password": "\\ud800"}'),
        ("/api/api-keys", b'{"name": "a\\udc00b"}'),
        ("/api/users", b'{"username": "eve", "role": "viewer", "password": "correct horse \\ud800 battery"}'),
        ("/api/models", b'{"name": "m\\ud800", "repo_id": "a/b", "filename": "c.gguf"}'),
    ]
    for path, raw in bodies:
        r = a.http.post(path, content=raw, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["status"] == 400, (path, r.status_code, r.text[:300])
    assert _api(a, "GET", "/api/users").status_code == 200
    # The rule itself, without a body parser in front of it:
    with pytest.raises(ValidationError, match="surrogate"):
        check_password("correct horse \ud800 battery staple")


def test_changing_the_second_factor_password_or_tokens_asks_for_the_current_password(
    console: Proxy, admin_client: Any
) -> None:
    """issue 19 (ASVS 3.7.1): a session alone could replace the second factor and wipe the recovery codes."""
    c: AdminClient = admin_client()
    c.login("alice")
    page = c.get("/account/totp").text
    secret = page.split('id="totp-secret">')[1].split("<")[0]
    code = pyotp.TOTP(secret).now()
    without = c.post("/account/totp", {"code": code})
    assert _refused(c, without, "/admin/account/totp", "current")
    wrong = c.post("/account/totp", {"code": code, "current": "a wrong password"})
    assert _refused(c, wrong, "/admin/account/totp", "current")
    assert console.query("SELECT totp_secret FROM users WHERE username = 'alice'") == [(None,)]
    assert c.post("/account/totp", {"code": code, "current": PASSWORD}).status_code == 303
    assert console.query("SELECT COUNT(*) FROM user_recovery_codes") == [(10,)]
    # Replacing it (a new enrolment while it is on) and turning it off need the password too.
    c.get("/account/totp")
    assert _refused(c, c.post("/account/totp/disable", {}), "/admin/account", "current")
    assert console.query("SELECT COUNT(*) FROM user_recovery_codes") == [(10,)]
    c.get("/tokens")
    assert _refused(c, c.post("/tokens", {"name": "no password", "scope": "viewer"}), "/admin/tokens", "current")
    wrong = c.post("/tokens", {"name": "wrong password", "scope": "viewer", "current": "a wrong password"})
    assert "a wrong password" not in _session(c), "a refused form's password was kept in the session cookie"
    assert _refused(c, wrong, "/admin/tokens", "current")
    assert console.query("SELECT COUNT(*) FROM admin_tokens") == [(0,)]
    new = "another long password"
    c.get("/account")
    assert _refused(c, c.post("/account/password", {"new": new, "again": new}), "/admin/account", "current")
    # Nor through the users page or API: resetting one's own password would skip the current one (and,
    # after the redirect, show the new one to a session the reset has just ended).
    alice = console.query("SELECT id FROM users WHERE username = 'alice'")[0][0]
    own = _api(c, "PATCH", f"/api/users/{alice}", json={"action": "reset-password"})
    assert own.status_code == 400 and own.json()["error"]["field"] == "action" and "password" not in own.json()
    c.get("/users")
    assert c.post(f"/users/{alice}", {"action": "reset-password"}).status_code == 303
    assert "Account page" in c.get("/users").text and c.get("/").status_code == 200, "still signed in"


def _refused(c: AdminClient, answer: httpx.Response, page: str, field: str) -> bool:
    """A refused console form: a redirect (post/redirect/get) to ``page``, which says once, beside
    ``field``, that the current password is wrong (or, after three wrong ones, to wait: the
    account's login throttle counts them)."""
    location = answer.headers.get("location", "")
    assert answer.status_code == 303 and location.split("#")[0] == page, (answer.status_code, location)
    shown = c.follow(answer).text
    said = (
        rf'id="{field}-error">(The current password is wrong\.|Too many wrong passwords\. Try again in \d+ seconds\.)<'
    )
    assert re.search(said, shown), shown[:3000]
    assert f'id="{field}-error"' not in c.get(page.removeprefix("/admin")).text, "the error is shown once"
    return True


def _session(c: AdminClient) -> str:
    """The decrypted JSON of the client's session cookie (the test knows the key)."""
    box = Fernet(base64.urlsafe_b64encode(cookie_key(bytes.fromhex(SESSION_KEY))))
    return box.decrypt(c.cookies()[COOKIE_NAME].encode()).decode()


def test_the_account_forms_redirect_and_show_the_recovery_codes_once(console: Proxy, admin_client: Any) -> None:
    """issue 19 (post/redirect/get): reloading the account page after a password change or a TOTP
    enrolment re-submitted the form (a password, a code), and the recovery codes came with the POST."""
    c: AdminClient = admin_client()
    c.login("alice")
    secret = c.get("/account/totp").text.split('id="totp-secret">')[1].split("<")[0]
    on = c.post("/account/totp", {"code": pyotp.TOTP(secret).now(), "current": PASSWORD})
    assert on.status_code == 303 and on.headers["location"] == "/admin/account" and "<code>" not in on.text
    codes = re.findall(r"<li><code>([0-9a-f]{10})</code></li>", c.follow(on).text)
    assert len(codes) == 10
    again = c.get("/account").text
    assert "Two-factor login is on" not in again and not any(code in again for code in codes), "shown once"
    assert not any(code in _session(c) for code in codes), "the codes left the session with the page that showed them"
    new = "alice's next long passphrase"
    changed = c.post("/account/password", {"current": PASSWORD, "new": new, "again": new})
    assert changed.status_code == 303 and changed.headers["location"] == "/admin/account"
    assert "Password changed" in c.follow(changed).text and "Password changed" not in c.get("/account").text
    weak = c.post("/account/password", {"current": new, "new": " " * 12, "again": " " * 12})
    assert weak.status_code == 303 and 'id="new-error"' in c.follow(weak).text
    off = c.post("/account/totp/disable", {"current": new})
    assert off.status_code == 303 and "Two-factor login is off" in c.follow(off).text
    assert console.query("SELECT totp_secret IS NULL FROM users WHERE username = 'alice'") == [(1,)]


def _cookies(r: httpx.Response) -> list[str]:
    return r.headers.get_list("set-cookie")


def test_cookies_are_secure_and_hsts_is_sent_behind_a_trusted_tls_proxy(make_proxy: Any, shared_daemon: Daemon) -> None:
    """issue 19: behind a TLS-terminating reverse proxy the cookie never got Secure, and there was no HSTS."""
    behind = make_proxy(
        shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_TRUSTED_PROXIES="127.0.0.1"
    )
    behind.start()
    add_user(behind, "alice")
    https = {"X-Forwarded-Proto": "https"}
    r = httpx.get(admin_url(behind, "/login"), headers=https)
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    assert _cookies(r) and all("Secure" in c for c in _cookies(r))
    plain = httpx.get(admin_url(behind, "/login"))
    assert "strict-transport-security" not in plain.headers and not any("Secure" in c for c in _cookies(plain))
    # The signed-in session's cookie too (sent by hand: a cookie jar keeps Secure cookies for https).
    login_cookie = _cookies(r)[0].split(";")[0]
    csrf = r.text.split('name="csrf" value="')[1].split('"')[0]
    form = {"csrf": csrf, "username": "alice", "password": PASSWORD}
    done = httpx.post(admin_url(behind, "/login"), data=form, headers={**https, "Cookie": login_cookie})
    assert done.status_code == 303, done.text
    session = [c for c in _cookies(done) if c.startswith("llmserver_admin=")]
    assert session and "Secure" in session[0] and "HttpOnly" in session[0] and "SameSite=Lax" in session[0]
    assert done.headers["strict-transport-security"] == "max-age=31536000"
    # From a peer that is not a trusted proxy, the header is anyone's word: ignored.
    untrusted = make_proxy(shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY).start()
    r = httpx.get(admin_url(untrusted, "/login"), headers=https)
    assert "strict-transport-security" not in r.headers and not any("Secure" in c for c in _cookies(r))
    # The setting, for a proxy that does not say: always Secure, always HSTS.
    declared = make_proxy(shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_SECURE_COOKIES="1")
    r = httpx.get(admin_url(declared.start(), "/login"))
    assert r.headers["strict-transport-security"] == "max-age=31536000" and all("Secure" in c for c in _cookies(r))


def test_an_account_made_with_a_password_from_someone_else_must_change_it_first(
    console: Proxy, admin_client: Any
) -> None:
    """issue 19: generated passwords never had to be changed (the browser test walks the pages)."""
    a: AdminClient = admin_client()
    a.login("alice")
    made = _api(a, "POST", "/api/users", json={"username": "gus", "role": "admin"})
    assert made.status_code == 201 and made.json()["user"]["password_change_required"] is True
    g: AdminClient = admin_client()
    assert g.login("gus", made.json()["password"]).status_code == 303
    assert g.get("/").headers["location"] == "/admin/account"
    assert g.get("/api-keys").headers["location"] == "/admin/account"
    assert g.http.get("/api/api-keys").status_code == 403
    assert g.get("/account").status_code == 200
    assert g.post("/api-keys", {"name": "before choosing"}).status_code == 403
    new = "gus picks his own passphrase"
    changed = g.post("/account/password", {"current": made.json()["password"], "new": new, "again": new})
    assert "Password changed" in g.follow(changed).text
    assert g.get("/").status_code == 200 and g.http.get("/api/api-keys").status_code == 200
    # A reset by an admin asks again.
    gus = made.json()["user"]["id"]
    reset = _api(a, "PATCH", f"/api/users/{gus}", json={"action": "reset-password"})
    assert reset.json()["user"]["password_change_required"] is True
    h: AdminClient = admin_client()
    h.login("gus", reset.json()["password"])
    assert h.get("/").headers["location"] == "/admin/account"


@pytest.mark.parametrize(
    "password",
    [
        " " * 12,
        "\t" * 12 + " ",
        "password1234",
        "  Password1234  ",
        "qwertyuiopas",
        "a" * 12,
        "1234567890123",
        "x" * 1024,
    ],
)
def test_blank_common_and_easily_guessed_passwords_are_refused(password: str) -> None:
    """issue 19 (ASVS 2.1.7): twelve spaces were a good password."""
    with pytest.raises(ValidationError):
        check_password(password)


def test_good_passwords_of_any_characters_are_accepted() -> None:
    for password in (PASSWORD, "gus picks his own passphrase", "Zw9 ünïcødé ☃ horse", "k" * 3 + "v8#Qm2!xLp0@"):
        assert check_password(password) == password


def test_viewers_cannot_list_hugging_face_tokens(console: Proxy, admin_client: Any) -> None:
    """issue 19: viewers could list Hugging Face token labels through the API (the page is admin only)."""
    add_user(console, "vera", role="viewer")
    v: AdminClient = admin_client()
    v.login("vera")
    refused = v.http.get("/api/hf-tokens")
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden"
    a: AdminClient = admin_client()
    a.login("alice")
    assert a.http.get("/api/hf-tokens").status_code == 200


def test_a_command_line_token_needs_an_account_and_acts_as_it(tmp_path: Path) -> None:
    from tests.admin.test_admin_cli import cli

    assert (
        cli(tmp_path, "admin", "create-user", "vic", "--role", "viewer", stdin="a long enough password\n").returncode
        == 0
    )
    nobody = cli(tmp_path, "admin", "create-token", "backup", "--user", "nobody")
    assert nobody.returncode == 2 and "no account named 'nobody'" in nobody.stderr
    too_much = cli(tmp_path, "admin", "create-token", "backup", "--user", "vic", "--scope", "admin")
    assert too_much.returncode == 2 and "viewer account can only have viewer tokens" in too_much.stderr
    ok = cli(tmp_path, "admin", "create-token", "backup", "--user", "vic", "--expires-in-days", "7")
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1].startswith("llmsadm_")


@pytest.mark.asyncio
async def test_existing_tokens_belong_to_the_account_that_made_them_after_the_migration(tmp_path: Path) -> None:
    """issue 19: the migration gives each token made from a session its account; an ownerless one is refused."""
    old = tmp_path / "old-migrations"
    old.mkdir()
    for f in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if f.name < "20250109070000":
            shutil.copy(f, old / f.name)
    path = tmp_path / "app.db"
    apply_migrations(path, old)
    tokens, conn = {}, sqlite3.connect(path)
    with conn:
        conn.execute("INSERT INTO users (username, password_hash, created_at) VALUES ('olga', 'argon2-stand-in', 0)")
        for created_by in ("olga", "cli:root"):
            public_id, secret = "".join(secrets.choice("abcdefghjk") for _ in range(12)), "s" * 32
            tokens[created_by] = f"llmsadm_{public_id}_{secret}"
            conn.execute(
                "INSERT INTO admin_tokens (public_id, name, secret_hash, scope, created_by, created_at) "
                "VALUES (?, ?, ?, 'admin', ?, 0)",
                (public_id, created_by, hashlib.sha256(secret.encode()).hexdigest(), created_by),
            )
    conn.close()
    assert "20250109070000_admin_token_owner" in apply_migrations(path)
    async with Database.open(path) as db:
        repo = AdminTokenRepository(db)
        found = await repo.verify(tokens["olga"])
        olga = await UserRepository(db).get_user("olga")
        assert olga is not None and found is not None and found[0].user_id == olga.id and found[1] == "admin"
        assert await repo.verify(tokens["cli:root"]) is None
        assert {t.owner for t in await repo.list()} == {"olga", None}
