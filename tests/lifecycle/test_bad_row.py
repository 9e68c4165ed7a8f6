"""Issue 19: one model row holding a value no check lets in (``keep_alive`` stored as the text
``'inf'``, as the admin API once accepted it) must not stop the proxy's reconciler for every other
model. A real proxy and daemon: the daemon's ``smollm2`` is registered by the reconciler, its row is
spoiled by hand, and a speech model registered after it must still be brought to its desired state
(the reconciler's pass used to raise at ``smollm2`` every time, so nothing after it converged).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx2 as httpx
import pytest

from tests.admin.conftest import SESSION_KEY, AdminClient, add_user, admin_url
from tests.harness import Daemon, Proxy

pytestmark = pytest.mark.timeout(120)


def _wait(proxy: Proxy, sql: str, want: list[tuple[object, ...]], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while proxy.query(sql) != want:
        assert time.monotonic() < deadline, f"{sql}: {proxy.query(sql)} != {want}"
        time.sleep(0.2)


def test_a_bad_stored_keep_alive_does_not_stop_the_reconciler_for_other_models(
    make_proxy: Any, shared_daemon: Daemon
) -> None:
    proxy: Proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY).start()
    add_user(proxy, "alice")
    _wait(proxy, "SELECT actual_state FROM models WHERE name = 'smollm2'", [("running",)])
    conn = sqlite3.connect(proxy.db_path, timeout=10)
    conn.execute("UPDATE models SET keep_alive = 'inf' WHERE name = 'smollm2'")
    conn.commit()
    conn.close()
    c = AdminClient(proxy)
    try:
        c.login("alice")
        c.get("/models")
        headers = {"X-CSRF-Token": c.csrf}
        made = c.http.post("/api/models", json={"name": "zz-voice", "kind": "tts", "source_repo": "acme/voice"},
                           headers=headers)  # fmt: skip
        assert made.status_code == 201, made.text
        assert c.http.post("/api/models/zz-voice/start", headers=headers).status_code == 200
        _wait(proxy, "SELECT actual_state FROM models WHERE name = 'zz-voice'", [("running",)])
        listed = {m["name"]: m for m in c.http.get("/api/models").json()["models"]}
        assert listed["smollm2"]["invalid"] == ["keep_alive"] and listed["smollm2"]["keep_alive"] is None
        assert "holds invalid keep_alive" in proxy.log_path.read_text()
        # The edge refuses the same value now: a 400 naming the field.
        refused = c.http.patch("/api/models/smollm2", json={"keep_alive": "inf"}, headers=headers)
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "keep_alive"
        # Setting it again repairs the row.
        fixed = c.http.patch("/api/models/smollm2", json={"keep_alive": None}, headers=headers)
        assert fixed.status_code == 200 and fixed.json()["invalid"] == []
    finally:
        c.close()
    assert httpx.get(admin_url(proxy, "/models")).status_code in (200, 303)
