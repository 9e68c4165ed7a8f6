"""Issue 19, the console's input and destructive actions, in a real headless Chromium.

A value that passes no check (an expiry in the year 9999) is refused beside its field and the form
comes back as typed; a bad value already in the database breaks no page; every form POST answers
with a redirect (a reload re-submits nothing, a new key is shown once); the five destructive actions
take a second step that works without JavaScript and says what breaks; error pages are the
console's own. Screenshots of the changed pages at 1280 and 390 px go to the test artifacts.
"""

from __future__ import annotations

import re
import sqlite3
import time
from typing import Any

import httpx2 as httpx
import pytest
from playwright.sync_api import Browser, Page, Response, expect

from tests.admin.conftest import PASSWORD, SESSION_KEY, add_user, admin_url
from tests.admin.test_admin_browser import ARTIFACTS, PHONE, browser, login, pages  # noqa: F401 (fixtures)
from tests.harness import Daemon, Proxy, demo_model_path, demo_spec

HELLO = [{"role": "user", "content": "Say hello."}]

pytestmark = pytest.mark.timeout(240)


def write_sql(proxy: Proxy, sql: str, args: tuple[object, ...] = ()) -> None:
    """A change made by hand in ``sqlite3`` (what an older version, or an admin, could have stored)."""
    conn = sqlite3.connect(proxy.db_path, timeout=10)
    try:
        conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def shoot(page: Page, name: str) -> None:
    """Screenshots of the page as it is, at 1280 and at 390 px wide."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width, height in ((1280, 900), (PHONE["width"], PHONE["height"])):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(ARTIFACTS / f"issue19-{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def submitted(page: Page, click: Any) -> Response:
    """Click a submit button; the response of the page the browser ends on."""
    with page.expect_navigation() as nav:
        click()
    response = nav.value
    assert response is not None
    return response


def assert_redirected_post(response: Response) -> None:
    """Post/redirect/get: the page after a form is a GET that a POST redirected to."""
    assert response.request.method == "GET", "the page after a form POST must come from a redirect"
    assert response.request.redirected_from is not None
    assert response.request.redirected_from.method == "POST"


def test_a_far_expiry_is_refused_beside_its_field_and_the_form_keeps_what_was_typed(
    console: Proxy,
    pages: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 19: an expiry of 9999-12-31 was stored and every keys page answered 500 after."""
    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, "/api-keys"))
    form = page.locator("#create-key")
    form.get_by_label("Name").fill("far key")
    form.get_by_label("Token limit").fill("5000")
    form.get_by_label("Budget period").select_option("weekly")
    form.get_by_label("Expires").fill("9999-12-31")
    response = submitted(page, lambda: form.get_by_role("button", name="Create key").click())
    assert response.status == 200
    assert_redirected_post(response)
    error = page.locator("#expires-error")
    expect(error).to_contain_text("between the years 2000 and 2999")
    expires = page.locator("#create-key input[name=expires]")
    expect(expires).to_have_attribute("aria-invalid", "true")
    expect(expires).to_have_value("9999-12-31")
    expect(page.locator("#create-key input[name=name]")).to_have_value("far key")
    expect(page.locator("#create-key input[name=token_limit]")).to_have_value("5000")
    expect(page.locator("#create-key select[name=budget_period]")).to_have_value("weekly")
    shoot(page, "key-form-refused")
    assert console.query("SELECT COUNT(*) FROM api_keys") == [(0,)]
    page.reload()  # the flash was for one page: the form is empty again, nothing was posted
    expect(page.locator("#expires-error")).to_have_count(0)
    expect(page.locator("#create-key input[name=name]")).to_have_value("")
    # The JSON API and a hand-made body say which field, with a 400, never a 500.
    token = _admin_token(page, console)
    for body in ({"name": "x", "expires_at": 1e300}, {"name": "x", "expires_at": "9999-12-31"}):
        answer = httpx.post(admin_url(console, "/api/api-keys"), headers=token, json=body)
        assert answer.status_code == 400 and answer.json()["error"]["field"] == "expires_at", answer.text
    bidi = httpx.post(admin_url(console, "/api/api-keys"), headers=token, json={"name": "evil\u202etxt.exe"})
    assert bidi.status_code == 400 and bidi.json()["error"]["field"] == "name"
    patch = httpx.patch(admin_url(console, "/api/models/smollm2"), headers=token, json={"keep_alive": "inf"})
    assert patch.status_code == 400 and patch.json()["error"]["field"] == "keep_alive", patch.text


def _admin_token(page: Page, console: Proxy) -> dict[str, str]:
    page.goto(admin_url(console, "/tokens"))
    page.locator("#create-token").get_by_label("Name").fill("script")
    page.locator("#create-token").get_by_label("Scope").select_option("admin")
    page.locator("#create-token").get_by_label("Your current password").fill(PASSWORD)  # re-authentication
    page.locator("#create-token").get_by_role("button", name="Create token").click()
    return {"Authorization": f"Bearer {page.locator('#full-token').inner_text().strip()}"}


def test_a_bad_value_already_stored_breaks_no_page_and_shows_as_invalid(
    console: Proxy,
    pages: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 19: rows written before the checks (or by hand) made the keys and models pages answer 500."""
    far = console.make_key("far")
    console.make_key("text expiry")
    write_sql(console, "UPDATE api_keys SET expires_at = 1e300 WHERE name = 'far'")
    write_sql(console, "UPDATE api_keys SET expires_at = '9999-12-31' WHERE name = 'text expiry'")
    now = time.time()
    write_sql(
        console,
        "INSERT INTO models (name, kind, backend, local_path, params, keep_alive, desired_state, created_at, "
        "updated_at) VALUES ('broken', 'llm', 'llamacpp', '/m.gguf', '[1]', 'inf', 'stopped', ?, ?)",
        (now, now),
    )
    page: Page = pages()
    login(page, console, "alice")
    for path in ("/api-keys", "/api-keys/1", "/api-keys/2", "/models", "/", "/reports", "/audit"):
        response = page.goto(admin_url(console, path))
        assert response is not None and response.status == 200, (path, response and response.status)
    page.goto(admin_url(console, "/api-keys"))
    expect(page.locator("#keys tr", has_text="far")).to_contain_text("invalid")
    expect(page.locator("#keys tr", has_text="far").locator("td.expires")).to_have_text("invalid")  # the expiry
    shoot(page, "keys-invalid-row")
    page.goto(admin_url(console, "/models"))
    expect(page.locator('tr[data-model="broken"]')).to_contain_text("invalid")
    # And the stored key refuses requests (an unknown limit fails closed), with a 401, not a 500.
    refused = httpx.get(f"{console.base_url}/models", headers={"Authorization": f"Bearer {far}"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    listed = httpx.get(admin_url(console, "/api/api-keys"), headers=_admin_token(page, console))
    assert listed.status_code == 200 and {k["name"] for k in listed.json()["keys"]} == {"far", "text expiry"}


def test_every_form_post_redirects_and_a_new_key_is_shown_once(
    console: Proxy,
    pages: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 19: reloading after a POST re-submitted it (a second key, a second user)."""
    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, "/api-keys"))
    page.locator("#create-key").get_by_label("Name").fill("once")
    response = submitted(page, lambda: page.get_by_role("button", name="Create key").click())
    assert_redirected_post(response)
    key = page.locator("#full-key").inner_text().strip()
    assert re.fullmatch(r"llms_\w{12}_\w{32}", key)
    shoot(page, "key-created")
    page.reload()
    expect(page).to_have_url(re.compile(r"/admin/api-keys$"))
    assert key not in page.content()
    assert console.query("SELECT COUNT(*) FROM api_keys") == [(1,)]
    page.goto(admin_url(console, "/users"))
    page.locator("#create-user").get_by_label("User name").fill("bob")
    response = submitted(page, lambda: page.get_by_role("button", name=re.compile("^Create")).click())
    assert_redirected_post(response)
    password = page.locator("#shown-password").inner_text()
    assert len(password) >= 12
    page.reload()
    expect(page.locator("#shown-password")).to_have_count(0)
    assert console.query("SELECT COUNT(*) FROM users WHERE username = 'bob'") == [(1,)]
    # A refused form is a redirect too, and its flash comes back once.
    page.locator("#create-user").get_by_label("User name").fill("bob")
    response = submitted(page, lambda: page.get_by_role("button", name=re.compile("^Create")).click())
    assert_redirected_post(response)
    expect(page.locator("#username-error")).to_be_visible()
    expect(page.locator("#create-user input[name=username]")).to_have_value("bob")


def test_the_model_register_form_keeps_what_was_typed_with_the_error_beside_the_field(
    console: Proxy,
    pages: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 19: a refused registration lost everything typed and showed the error at the top only."""
    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, "/models"))
    form = page.locator("#register")
    form.get_by_label("Name").fill("bad name\n")
    form.get_by_label("Kind").select_option("tts")
    form.get_by_label("Hugging Face repository").fill("acme/voice")
    response = submitted(page, lambda: form.get_by_role("button", name="Register").click())
    assert_redirected_post(response)
    expect(page.locator("#register #name-error")).to_contain_text("invalid model name")
    expect(page.locator("#register input[name=source_repo]")).to_have_value("acme/voice")
    expect(page.locator("#register select[name=kind]")).to_have_value("tts")
    expect(page.locator("#run #name-error")).to_have_count(0)  # the other form on the page is left alone
    shoot(page, "model-form-refused")


def test_error_pages_are_the_consoles_own_with_its_security_headers(
    console: Proxy,
    pages: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 19: a failure in the console came back as the proxy's JSON envelope, without the CSP
    (a key id past 64 bits, a page number in other digits); now a 400 or 404 page of the console."""
    add_user(console, "victor", role="viewer")
    page: Page = pages()
    login(page, console, "alice")
    cases = (
        ("/nope", 404),
        ("/api-keys/99999999999999999999", 404),
        ("/models/nope/remove", 404),
        ("/audit?page=%C2%B2", 400),
    )
    for path, status in cases:
        response = page.goto(admin_url(console, path))
        assert response is not None and response.status == status, (path, response and response.status)
        assert response.headers["content-type"].startswith("text/html"), path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        expect(page.get_by_role("heading", name=str(status))).to_be_visible()
        expect(page.get_by_role("link", name="API keys")).to_be_visible()  # the console's own page, menu and all
    shoot(page, "error-400")
    viewer: Page = pages()
    login(viewer, console, "victor")
    response = viewer.goto(admin_url(console, "/users"))
    assert response is not None and response.status == 403
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    expect(viewer.get_by_role("heading", name="403")).to_be_visible()


@pytest.fixture
def full_console(make_proxy: Any, make_daemon: Any) -> Proxy:
    """A console with a vault (Hugging Face tokens), an admin ``alice`` and a daemon of its own (the
    test removes the daemon's model, which the shared daemon's other users need)."""
    daemon: Daemon = make_daemon("--model", demo_spec(n_threads=1)).start()
    proxy: Proxy = make_proxy(
        daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_ENCRYPTION_KEY="3c" * 32
    ).start()
    add_user(proxy, "alice")
    return proxy


def _confirm(page: Page, link: str, said: list[str], button: str, shot: str) -> None:
    """Follow the list's link to the confirmation page, check what it says, confirm."""
    page.get_by_role("link", name=link).click()
    expect(page).to_have_url(re.compile(r"/(revoke|remove|disable|delete)$"))
    for text in said:
        expect(page.locator("#confirm")).to_contain_text(text)
    shoot(page, shot)
    response = submitted(page, lambda: page.get_by_role("button", name=button).click())
    assert_redirected_post(response)


def test_destructive_actions_take_a_second_step_without_javascript_that_says_what_breaks(
    full_console: Proxy,
    browser: Browser,  # noqa: F811 (the fixture imported above)
    openai_client: Any,
) -> None:
    """issue 19: removing a model, revoking a key, disabling a user, deleting a Hugging Face token
    and revoking an admin token each took one click."""
    console = full_console
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        login(page, console, "alice")
        _check_key_revocation(page, console, openai_client)
        _check_model_removal(page, console)
        _check_user_disabling(page, console)
        _check_token_deletion(page, console)
        _check_admin_token_revocation(page, console)
    finally:
        context.close()


def _check_key_revocation(page: Page, console: Proxy, openai_client: Any) -> None:
    key = console.make_key("busy key")
    client = openai_client(console.base_url, key)
    for _ in range(2):
        client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=1)
    page.goto(admin_url(console, "/api-keys/1"))
    page.locator("#revoke").click()  # the old one-click button: now only the way to the second step
    expect(page.locator("#confirm")).to_contain_text("2 requests in the last day used this key")
    assert console.query("SELECT revoked_at FROM api_keys") == [(None,)], "revoked without a confirmation"
    shoot(page, "confirm-revoke-key")
    response = submitted(page, lambda: page.get_by_role("button", name="Revoke the key").click())
    assert_redirected_post(response)
    expect(page.locator("#keys")).to_contain_text("revoked")
    expect(page.get_by_role("status")).to_contain_text("revoked")


def _check_model_removal(page: Page, console: Proxy) -> None:
    page.goto(admin_url(console, "/models"))
    form = page.locator("#register")
    form.get_by_label("Name").fill("spare")
    form.get_by_label("or a local path").fill(str(demo_model_path()))
    form.get_by_role("button", name="Register").click()
    expect(page.locator('tr[data-model="smollm2"] [data-field="actual_state"]')).to_have_text("running")
    said = ["This is the only running model", "2 requests in the last day went to this model"]
    _confirm(page, "Remove smollm2", said, "Remove the model", "confirm-remove-model")
    assert console.query("SELECT COUNT(*) FROM models WHERE name = 'smollm2'") == [(0,)]


def _check_user_disabling(page: Page, console: Proxy) -> None:
    bob = add_user(console, "bob")
    console.make_key("bob's", user_id=bob)
    write_sql(  # an admin API token bob made (it acts as bob: disabling him revokes it)
        console,
        "INSERT INTO admin_tokens (public_id, name, secret_hash, scope, created_by, created_at, user_id) "
        "VALUES ('bobbobbobbob', 'bob''s script', ?, 'admin', 'bob', ?, ?)",
        ("0" * 64, time.time(), bob),
    )
    page.goto(admin_url(console, "/users"))
    said = [
        "bob is logged out at once",
        "Its 1 admin API token (“bob's script”) is revoked for good",
        "The API key bob created keeps working",
    ]
    _confirm(page, "Disable bob", said, "Disable the user", "confirm-disable-user")
    assert console.query("SELECT disabled FROM users WHERE username = 'bob'") == [(1,)]
    assert console.query("SELECT revoked_at IS NOT NULL FROM admin_tokens WHERE user_id = ?", (bob,)) == [(1,)]


def _check_token_deletion(page: Page, console: Proxy) -> None:
    page.goto(admin_url(console, "/hf-tokens"))
    form = page.locator("#add-token")
    form.get_by_label("Label").fill("main")
    form.get_by_label("Token", exact=True).fill("hf_" + "q" * 30)
    form.get_by_label("Use as the default token").check()
    form.get_by_role("button", name="Store token").click()
    write_sql(console, "UPDATE models SET hf_token_id = 1 WHERE name = 'spare'")
    page.goto(admin_url(console, "/hf-tokens"))
    said = ["1 model uses this token", "spare", "It is the default token"]
    _confirm(page, "Delete main", said, "Delete the token", "confirm-delete-hf-token")
    assert console.query("SELECT COUNT(*) FROM huggingface_tokens") == [(0,)]


def _check_admin_token_revocation(page: Page, console: Proxy) -> None:
    page.goto(admin_url(console, "/tokens"))
    page.locator("#create-token").get_by_label("Name").fill("nightly")
    page.locator("#create-token").get_by_label("Your current password").fill(PASSWORD)  # re-authentication
    page.locator("#create-token").get_by_role("button", name="Create token").click()
    page.goto(admin_url(console, "/tokens"))
    _confirm(page, "Revoke nightly", ["it was last used: never"], "Revoke the token", "confirm-revoke-admin-token")
    assert console.query("SELECT revoked_at IS NOT NULL FROM admin_tokens WHERE name = 'nightly'") == [(1,)]
