"""Issue 19, "Models by state", through the console's JSON API on a real proxy and the real daemon:
each model's ``actions``, ``disk_bytes`` and ``memory_bytes``; the edit (PATCH) validates the
parameters the console's forms offer with a 400 naming the field; the test answers a latency, is
audited, bills no key and is refused for a model that is not loaded."""

from __future__ import annotations

from typing import Any

import pytest

from tests.admin.conftest import AdminClient, add_user
from tests.harness import Proxy
from tests.lifecycle.conftest import demo_gguf


def _client(admin_client: Any) -> tuple[AdminClient, dict[str, str]]:
    c: AdminClient = admin_client()
    c.login("alice")
    c.get("/models")
    return c, {"X-CSRF-Token": c.csrf}


def _wait_running(c: AdminClient, name: str) -> dict[str, Any]:
    import time

    end = time.monotonic() + 30
    while True:
        model = c.http.get(f"/api/models/{name}").json()
        if model.get("actual_state") == "running" or time.monotonic() > end:
            return dict(model)
        time.sleep(0.2)


def test_the_model_list_says_the_actions_sizes_and_memory_of_each_model(console: Proxy, admin_client: Any) -> None:
    """issue 19: memory from the runtime's models answer; only the actions that fit the state."""
    c, csrf = _client(admin_client)
    running = _wait_running(c, "smollm2")
    assert running["actions"] == ["stop", "test"]
    assert running["disk_bytes"] == demo_gguf().stat().st_size
    assert isinstance(running["memory_bytes"], int) and running["memory_bytes"] > running["disk_bytes"]
    made = c.http.post("/api/models", json={"name": "local", "local_path": str(demo_gguf())}, headers=csrf)
    assert made.status_code == 201, made.text
    local = c.http.get("/api/models/local").json()
    assert local["actions"] == ["start"] and local["memory_bytes"] is None
    assert local["disk_bytes"] == demo_gguf().stat().st_size
    listed = {m["name"]: m for m in c.http.get("/api/models").json()["models"]}
    assert listed["smollm2"]["memory_bytes"] == running["memory_bytes"] and listed["local"]["actions"] == ["start"]


def test_an_edit_validates_the_parameters_and_names_the_field(console: Proxy, admin_client: Any) -> None:
    """issue 19: n_ctx, n_threads, voices and keep-alive are checked at the edge (400 naming the field)."""
    c, csrf = _client(admin_client)
    assert c.http.post("/api/models", json={"name": "edited", "local_path": "/m.gguf"}, headers=csrf).status_code == 201
    bad = (
        ({"params": {"n_ctx": -5}}, "params.n_ctx"),
        ({"params": {"n_ctx": "big"}}, "params.n_ctx"),
        ({"params": {"n_threads": 0}}, "params.n_threads"),
        ({"params": {"n_threads": 1.5}}, "params.n_threads"),
        ({"params": {"voices": ["alloy"]}}, "params.voices"),  # not a speech model
        ({"keep_alive": "inf"}, "keep_alive"),
        ({"keep_alive": -1}, "keep_alive"),
    )
    for body, field in bad:
        r = c.http.patch("/api/models/edited", json=body, headers=csrf)
        assert r.status_code == 400, (body, r.status_code, r.text)
        assert r.json()["error"]["field"] == field, (body, r.json())
    rkllm = c.http.post(
        "/api/models", json={"name": "npu", "local_path": "/m.rkllm", "params": {"n_ctx": 4096}}, headers=csrf
    )
    assert rkllm.status_code == 400 and "max_context_len" in rkllm.json()["error"]["message"]
    good = c.http.patch(
        "/api/models/edited", json={"params": {"n_ctx": 1024, "n_threads": 2}, "keep_alive": 300}, headers=csrf
    )
    assert good.status_code == 200 and good.json()["params"] == {"n_ctx": 1024, "n_threads": 2}
    assert console.query("SELECT params, keep_alive FROM models WHERE name = 'edited'") == [
        ('{"n_ctx": 1024, "n_threads": 2}', 300.0)
    ]
    voices = c.http.post(
        "/api/models",
        json={"name": "voice", "kind": "tts", "source_repo": "acme/voice", "params": {"voices": ["a b"]}},
        headers=csrf,
    )
    assert voices.status_code == 400 and voices.json()["error"]["field"] == "params.voices"
    refused_csrf = c.http.patch("/api/models/edited", json={"keep_alive": 60})
    assert refused_csrf.status_code == 403
    changes = console.query("SELECT COUNT(*) FROM admin_audit WHERE action = 'model.change'")
    assert changes == [(1,)]


def test_a_test_answers_a_latency_is_audited_bills_no_key_and_needs_a_loaded_model(
    console: Proxy, admin_client: Any
) -> None:
    """issue 19: the "test" action (one short generation through the real daemon)."""
    c, csrf = _client(admin_client)
    _wait_running(c, "smollm2")
    assert c.http.post("/api/models/smollm2/test").status_code == 403  # no CSRF header
    r = c.http.post("/api/models/smollm2/test", headers=csrf, timeout=120)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["model"] == "smollm2" and result["latency_ms"] > 0 and result["text"]
    assert 0 < result["completion_tokens"] <= 8 and result["prompt_tokens"] > 0
    assert result["first_text_ms"] is None or result["first_text_ms"] <= result["latency_ms"]
    assert console.query("SELECT COUNT(*) FROM token_usage_events") == [(0,)]
    audited = console.query("SELECT actor, target FROM admin_audit WHERE action = 'model.test'")
    assert audited == [("alice", "model smollm2")]
    assert c.http.post("/api/models", json={"name": "cold", "local_path": "/m.gguf"}, headers=csrf).status_code == 201
    cold = c.http.post("/api/models/cold/test", headers=csrf)
    assert cold.status_code == 409 and "not loaded" in cold.json()["error"]["message"]
    assert c.http.post("/api/models/nothing/test", headers=csrf).status_code == 404

    add_user(console, "victor", role="viewer")  # a viewer reads the sizes but neither tests nor edits
    v: AdminClient = admin_client()
    v.login("victor")
    page = v.get("/models").text
    assert 'data-field="disk_bytes"' in page and "Edit smollm2" not in page and "Test smollm2" not in page
    assert v.get("/models/smollm2/edit").status_code == 403
    assert v.http.post("/api/models/smollm2/test", headers={"X-CSRF-Token": v.csrf}).status_code == 403
    assert v.post("/models/smollm2/test").status_code == 403


def _runtime_model(endpoint: str, name: str) -> dict[str, Any] | None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from runtime.api.client import RuntimeClient

    async def ask() -> list[dict[str, Any]]:
        async with RuntimeClient(endpoint, connect_wait=0.2) as client:
            return [m.to_wire() for m in await client.models()]

    with ThreadPoolExecutor(1) as pool:
        models = pool.submit(asyncio.run, ask()).result()
    return next((m for m in models if m["name"] == name), None)


@pytest.mark.timeout(300)  # two loads with their warm-ups, on a busy machine
def test_an_edit_of_a_running_model_loads_it_again_with_the_new_parameters(
    make_daemon: Any, make_proxy: Any, tmp_path: Any
) -> None:
    """issue 19: the edit form's n_ctx reaches the runtime (the reconciler loads the model again)."""
    import time

    from tests.admin.conftest import SESSION_KEY

    daemon = make_daemon("--no-demo").start(ready_models=())
    proxy = make_proxy(
        daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_MODEL_CONFIG_DIR=str(tmp_path / "config")
    ).start()
    add_user(proxy, "alice")
    c = AdminClient(proxy)
    try:
        c.login("alice")
        c.get("/models")
        csrf = {"X-CSRF-Token": c.csrf}
        body = {"name": "smol", "local_path": str(demo_gguf()), "params": {"n_ctx": 512}, "start": True}
        assert c.http.post("/api/models", json=body, headers=csrf).status_code == 201

        def held(n_ctx: int) -> dict[str, Any] | None:
            end = time.monotonic() + 120
            while time.monotonic() < end:
                info = _runtime_model(daemon.endpoint, "smol")
                if info and info["state"] == "ready" and info["params"] == {"n_ctx": n_ctx}:
                    return info
                time.sleep(0.5)
            return None

        first = held(512)
        assert first is not None and first["context"] == 512
        changed = c.http.patch("/api/models/smol", json={"params": {"n_ctx": 1024}}, headers=csrf)
        assert changed.status_code == 200, changed.text
        second = held(1024)
        assert second is not None and second["context"] == 1024, _runtime_model(daemon.endpoint, "smol")
        assert second["memory_bytes"] > first["memory_bytes"]  # the larger context's cache
    finally:
        c.close()
