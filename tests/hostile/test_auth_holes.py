"""Issues 18 and 19, against the real proxy process: forwarded addresses, /metrics, the Server header,
the console's login throttle and refused accesses."""

from __future__ import annotations

import re
import socket
import sqlite3
from typing import Any

import httpx2 as httpx
import pytest

from proxy.auth.apikey import generate_api_key
from proxy.auth.clientaddr import client_address, parse_networks
from proxy.storage.database import Database
from proxy.storage.users import LoginThrottle
from tests.admin.conftest import PASSWORD, SESSION_KEY, AdminClient, add_user, admin_url
from tests.harness import Daemon, Proxy

METRICS_TOKEN = "metrics-" + "x7" * 12


@pytest.fixture
def trusting(make_proxy: Any, shared_daemon: Daemon) -> Proxy:
    """A proxy behind a trusted reverse proxy (loopback), with the console and a metrics token."""
    proxy: Proxy = make_proxy(
        shared_daemon.endpoint,
        LLMSERVER_TRUSTED_PROXIES="127.0.0.1",
        LLMSERVER_SESSION_KEY=SESSION_KEY,
        LLMSERVER_METRICS_TOKEN=METRICS_TOKEN,
    )
    return proxy.start()


def test_every_x_forwarded_for_line_counts(trusting: Proxy) -> None:
    """Issue 18: two header lines (the client's ``10.1.2.3``, then the reverse proxy's ``203.0.113.7``)
    passed a ``10.0.0.0/8`` allow-list that one line with both refuses: only the first line was read."""
    key = trusting.make_key("office-only", allowed_cidrs=["10.0.0.0/8"])
    auth = ("Authorization", f"Bearer {key}")
    url = f"{trusting.base_url}/models"
    one_line = httpx.get(url, headers=[auth, ("X-Forwarded-For", "10.1.2.3, 203.0.113.7")])
    two_lines = httpx.get(url, headers=[auth, ("X-Forwarded-For", "10.1.2.3"), ("X-Forwarded-For", "203.0.113.7")])
    assert one_line.status_code == 403
    assert two_lines.status_code == 403, "the second X-Forwarded-For line was ignored"
    from_office = httpx.get(url, headers=[auth, ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "10.1.2.3")])
    assert from_office.status_code == 200


def test_guesses_from_elsewhere_or_from_a_shared_address_never_refuse_a_right_key(trusting: Proxy) -> None:
    """Issue 18: 5 wrong secrets for a victim's public id from another address, or 30 random keys from
    the victim's own address (an office behind NAT), made the victim's valid, not yet cached key
    answer 401 for 60 s. Now they cost the victim a delay at most, and a throttled answer is a 429."""
    victims = [trusting.make_key(f"victim{i}") for i in range(2)]
    url = f"{trusting.base_url}/models"

    def get(key: str, address: str) -> httpx.Response:
        return httpx.get(url, headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": address}, timeout=30)

    for i in range(8):
        assert get(victims[0][:-6] + f"{i:06d}", "198.51.100.66").status_code in (401, 429)
    assert get(victims[0], "192.0.2.7").status_code == 200  # old code: 401 for a minute
    statuses = [get(generate_api_key()[0], "192.0.2.8").status_code for _ in range(31)]
    assert statuses == [401] * 30 + [429]
    assert get(victims[1], "192.0.2.8").status_code == 200  # old code: 401 for a minute
    throttled = get(generate_api_key()[0], "192.0.2.8")
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert throttled.json()["error"]["code"] == "rate_limit_exceeded"


def test_client_address_joins_the_lines_in_order() -> None:
    trusted = parse_networks("127.0.0.1, 192.168.0.0/16")
    assert client_address("127.0.0.1", ["10.1.2.3", "203.0.113.7, 192.168.1.1"], trusted) == "203.0.113.7"
    assert client_address("127.0.0.1", ["203.0.113.7", "10.1.2.3"], trusted) == "10.1.2.3"
    assert client_address("127.0.0.1", "10.1.2.3, 192.168.1.1", trusted) == "10.1.2.3"  # one line as a str
    assert client_address("203.0.113.9", ["10.1.2.3"], trusted) == "203.0.113.9"  # not from a trusted proxy


def test_metrics_need_the_token_when_one_is_set(trusting: Proxy) -> None:
    """Issue 18: ``/metrics`` needed no key. With LLMSERVER_METRICS_TOKEN it wants it as a bearer token."""
    url = f"http://127.0.0.1:{trusting.port}/metrics"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {METRICS_TOKEN}x"}):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_metrics_token"
        assert METRICS_TOKEN not in refused.text
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert scraped.status_code == 200 and "llmserver_argon2_runs_total" in scraped.text


def test_no_answer_names_versions_in_its_server_header(trusting: Proxy) -> None:
    """Issue 18/19: every answer said ``Server: Python/3.11 aiohttp/3.x``."""
    base = f"http://127.0.0.1:{trusting.port}"
    answers = [
        httpx.get(f"{base}/healthz"),
        httpx.get(f"{base}/v1/models"),  # 401
        httpx.get(f"{base}/nowhere"),  # 404
        httpx.get(f"{base}/admin/login"),
        httpx.get(f"{base}/admin/static/admin.css"),
        httpx.get(f"{base}/admin/", follow_redirects=False),  # a redirect to the login page
    ]
    for answer in answers:
        assert answer.headers.get("server") == "llmserver", (str(answer.url), answer.headers.get("server"))
    with socket.create_connection(("127.0.0.1", trusting.port), timeout=10) as raw:  # aiohttp's own 400
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        head = raw.recv(4096).decode(errors="replace")
    assert (
        head.startswith("HTTP/1.")
        and " 400 " in head.split("\r\n")[0]
        and re.search(r"(?im)^server: llmserver\r$", head)
    ), head


def test_a_good_login_does_not_reset_the_address_throttle(trusting: Proxy) -> None:
    """Issue 19: one good login reset the per-address login throttle, so an attacker with one account
    could keep guessing others' passwords. A good login now clears its own account's failures only."""
    add_user(trusting, "mallory")
    client = AdminClient(trusting)
    try:
        guesses = [client.login(f"victim{i}", "guess!").status_code for i in range(9)]
        assert guesses == [401] * 9
        assert client.login("mallory").status_code == 303  # her own account: a good login
        client.http.cookies.clear()
        assert client.login("victim9", "guess!").status_code == 401  # the address's tenth failure
        throttled = client.login("victim10", "guess!")
        assert throttled.status_code == 429  # old code: 401, the count was reset
        assert int(throttled.headers["retry-after"]) >= 1  # a throttled page says when to come back
    finally:
        client.close()


def test_a_refused_access_is_logged_and_audited_with_who_tried(trusting: Proxy) -> None:
    """Issue 19: a 403 (a viewer's write, a read-only token's write) was attributed nowhere."""
    add_user(trusting, "alice")
    add_user(trusting, "vera", role="viewer")
    admin = AdminClient(trusting)
    viewer = AdminClient(trusting)
    try:
        admin.login("alice")
        admin.get("/tokens")
        page = admin.follow(admin.post("/tokens", {"name": "reader", "scope": "viewer", "current": PASSWORD})).text
        token = re.search(r'id="full-token">(llmsadm_\w+)<', page).group(1)  # type: ignore[union-attr]
        forwarded = {"X-Forwarded-For": "198.51.100.23"}
        write = httpx.post(
            admin_url(trusting, "/api/api-keys"),
            headers={"Authorization": f"Bearer {token}", **forwarded},
            json={"name": "nope"},
        )
        assert write.status_code == 403
        assert viewer.login("vera", PASSWORD).status_code == 303
        viewer.get("/api-keys")
        viewer.http.headers.update(forwarded)
        assert viewer.post("/api-keys", {"name": "nope"}).status_code == 403
    finally:
        admin.close()
        viewer.close()
    conn = sqlite3.connect(trusting.db_path)
    try:
        rows = conn.execute(
            "SELECT actor, source, target FROM admin_audit WHERE action = 'access.denied' ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [
        ("token:reader", "198.51.100.23", "POST /admin/api/api-keys"),
        ("vera", "198.51.100.23", "POST /admin/api-keys"),
    ]
    assert token not in trusting.log_path.read_text()
    log = trusting.log_path.read_text()
    assert "refused POST /admin/api/api-keys" in log and "to vera from 198.51.100.23" in log


@pytest.mark.asyncio
async def test_an_address_quiet_for_an_hour_starts_again_from_one_failure(db: Database) -> None:
    """Issue 19: a good login no longer clears the address, so its count must fade on its own."""
    throttle = LoginThrottle(db)
    for i in range(12):
        await throttle.failed(["addr:192.0.2.9"], now=1000.0 + i)
    assert await throttle.wait_time(["addr:192.0.2.9"], now=1012.0) > 0
    await throttle.failed(["addr:192.0.2.9"], now=1011.0 + throttle.forget + 1)
    assert await throttle.wait_time(["addr:192.0.2.9"], now=1011.0 + throttle.forget + 1) == 0
