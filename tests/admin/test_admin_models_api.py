"""The model and Hugging Face token API and pages inside the console (issues 9 and 10): the console's
own authentication (session + CSRF, or an admin API token; a viewer reads only), its JSON error
envelope, its audit log."""

from __future__ import annotations

import re
from typing import Any

import httpx2 as httpx

from tests.admin.conftest import PASSWORD, SESSION_KEY, AdminClient, add_user, admin_url
from tests.harness import Daemon, Proxy


def _api_token(c: AdminClient, scope: str) -> dict[str, str]:
    c.get("/tokens")
    assert c.post("/tokens", {"name": f"{scope} models", "scope": scope, "current": PASSWORD}).status_code == 303
    page = c.get("/tokens").text  # shown once, on the page the form redirects to
    token = re.search(r'id="full-token">(llmsadm_\w+)<', page).group(1)  # type: ignore[union-attr]
    return {"Authorization": f"Bearer {token}"}


def test_the_model_api_answers_in_the_console_behind_its_session_csrf_and_roles(
    console: Proxy, admin_client: Any
) -> None:
    anonymous = httpx.get(admin_url(console, "/api/models"))
    assert anonymous.status_code == 401 and anonymous.json()["error"]["status"] == 401
    c: AdminClient = admin_client()
    c.login("alice")
    c.get("/models")
    assert "local" not in [m["name"] for m in c.http.get("/api/models").json()["models"]]
    body = {"name": "local", "local_path": "/models/m.gguf"}
    assert c.http.post("/api/models", json=body).status_code == 403  # no CSRF header
    made = c.http.post("/api/models", json=body, headers={"X-CSRF-Token": c.csrf})
    assert made.status_code == 201 and made.json()["name"] == "local", made.text
    bad = c.http.post("/api/models", json={**body, "name": "../x"}, headers={"X-CSRF-Token": c.csrf})
    error = bad.json()["error"]
    assert bad.status_code == 400 and error["status"] == 400 and "invalid model name" in error["message"]
    assert error["type"] == "invalid_request"

    viewer_token, admin_token = _api_token(c, "viewer"), _api_token(c, "admin")
    assert httpx.get(admin_url(console, "/api/models/local"), headers=viewer_token).json()["name"] == "local"
    refused = httpx.post(admin_url(console, "/api/models/local/stop"), headers=viewer_token)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "forbidden"
    assert httpx.post(admin_url(console, "/api/models/local/stop"), headers=admin_token).status_code == 200
    # Without LLMSERVER_ENCRYPTION_KEY a token cannot be stored: a clear error naming the setting.
    vaultless = httpx.post(
        admin_url(console, "/api/hf-tokens"), headers=admin_token, json={"label": "x", "token": "hf_" + "a" * 30}
    )
    assert vaultless.status_code == 503 and "LLMSERVER_ENCRYPTION_KEY" in vaultless.json()["error"]["message"]
    assert httpx.get(admin_url(console, "/api/hf-tokens"), headers=admin_token).json() == {"tokens": []}
    assert httpx.get(admin_url(console, "/api/hf-tokens"), headers=viewer_token).status_code == 403  # issue 19

    entries = c.http.get("/api/audit").json()["entries"]
    actions = {(e["action"], e["target"], e["actor"]) for e in entries}
    assert ("model.add", "model local", "alice") in actions
    assert ("model.stop", "model local", "token:admin models") in actions


def test_the_models_page_acts_with_csrf_and_a_viewer_only_reads(console: Proxy, admin_client: Any) -> None:
    c: AdminClient = admin_client()
    c.login("alice")
    c.get("/models")
    refused = c.post("/models", {"name": "../x", "local_path": "/m.gguf"})  # back to the form, with the error
    assert "invalid model name" in c.follow(refused).text
    assert c.post("/models", {"name": "<b>m</b>", "local_path": "/m.gguf"}).status_code == 303
    assert console.query("SELECT COUNT(*) FROM models WHERE name IN ('../x', '<b>m</b>')") == [(0,)]
    assert c.post("/models", {"name": "m1", "local_path": "/m.gguf"}, csrf="").status_code == 403
    # A speech model: served remotely, so starting it only marks it (the shared daemon is not asked).
    assert c.post("/models", {"name": "m1", "kind": "tts", "source_repo": "acme/voice"}).status_code == 303
    page = c.get("/models").text
    assert 'data-model="m1"' in page and "acme/voice" in page and "<b>m</b>" not in page
    assert c.post("/models/m1/start").status_code == 303
    assert c.http.get("/api/models/m1").json()["desired_state"] == "running"
    cancel = c.post("/models/m1/cancel")  # nothing downloading
    assert cancel.status_code == 303 and "no download of" in c.get("/models").text

    add_user(console, "victor", role="viewer")
    v: AdminClient = admin_client()
    v.login("victor")
    page = v.get("/models").text
    assert 'data-model="m1"' in page and 'action="/admin/models/m1/stop"' not in page
    assert v.post("/models/m1/stop").status_code == 403
    assert v.get("/hf-tokens").status_code == 403
    unconfirmed = c.post("/models/m1/remove")  # one click only leads to the confirmation (issue 19)
    assert unconfirmed.status_code == 303 and unconfirmed.headers["location"] == "/admin/models/m1/remove"
    assert c.http.get("/api/models/m1").status_code == 200
    assert c.post("/models/m1/remove", {"confirm": "yes"}).status_code == 303
    assert c.http.get("/api/models/m1").status_code == 404


def test_the_hf_tokens_page_adds_lists_defaults_and_deletes_and_never_shows_a_token(
    make_proxy: Any, shared_daemon: Daemon
) -> None:
    proxy: Proxy = make_proxy(
        shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_ENCRYPTION_KEY="3c" * 32
    ).start()
    add_user(proxy, "alice")
    first, second = "hf_" + "FirstSecret" * 3 + "aaaa", "hf_" + "OtherSecret" * 3 + "bbbb"
    c = AdminClient(proxy)
    try:
        c.login("alice")
        c.get("/hf-tokens")
        assert c.post("/hf-tokens", {"label": "first", "token": first, "default": "1"}).status_code == 303
        assert c.post("/hf-tokens", {"label": "second", "token": second}).status_code == 303
        refused = c.post("/hf-tokens", {"label": "empty", "token": ""})
        assert 'class="error"' in c.follow(refused).text
        page = c.get("/hf-tokens").text
        assert "…aaaa" in page and "…bbbb" in page and first not in page and second not in page
        ids = {t["label"]: t["id"] for t in c.http.get("/api/hf-tokens").json()["tokens"]}
        assert c.post(f"/hf-tokens/{ids['second']}/default").status_code == 303
        assert c.post(f"/hf-tokens/{ids['first']}/delete", {"confirm": "yes"}).status_code == 303
        tokens = c.http.get("/api/hf-tokens").json()["tokens"]
        assert [(t["label"], t["is_default"]) for t in tokens] == [("second", True)]
        entries = c.http.get("/api/audit").json()["entries"]
        assert {"hf_token.add", "hf_token.default", "hf_token.delete"} <= {e["action"] for e in entries}
        for text in (str(entries), proxy.log_path.read_text(), c.get("/models").text):
            assert first not in text and second not in text
    finally:
        c.close()
