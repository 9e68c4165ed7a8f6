"""Issue 12: CORS for browser clients, off by default, an allow-list of origins.

A real headless Chromium loads a page from one origin (a small HTTP server on another port of
127.0.0.1) and calls the proxy with ``fetch``, which sends a preflight first (the request carries an
``Authorization`` header and a JSON body). The listed origin gets its answer; a page from an origin
not on the list is refused by the browser itself, because the proxy does not echo it.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx2 as httpx
import pytest

from tests.harness import Daemon, Proxy, free_port

PAGE = b"<!doctype html><title>cors client</title><p>a page on another origin</p>"
CALL = """async ([url, key]) => {
  try {
    const r = await fetch(url + "/chat/completions", {
      method: "POST",
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/json"},
      body: JSON.stringify({model: "smollm2", messages: [{role: "user", content: "Hi"}], max_tokens: 3}),
    });
    const body = await r.json();
    return {status: r.status, object: body.object, requestId: r.headers.get("x-request-id")};
  } catch (e) {
    return {error: String(e)};
  }
}"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def page_origins() -> Iterator[tuple[str, str]]:
    """Two page servers: (allowed origin, other origin)."""
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Page) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)  # type: ignore[misc]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[*flags, "--disable-sync"])
        yield b
        b.close()


def test_a_listed_origin_calls_the_api_and_another_is_refused(
    shared_daemon: Daemon, make_proxy: Callable[..., Proxy], page_origins: tuple[str, str], browser: Any
) -> None:
    allowed, other = page_origins
    proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_CORS_ORIGINS=allowed).start()
    key = proxy.make_key()
    page = browser.new_page()
    page.goto(allowed)
    answer = page.evaluate(CALL, [proxy.base_url, key])
    assert answer.get("status") == 200 and answer["object"] == "chat.completion", answer
    rows = proxy.query("SELECT status FROM token_usage_events WHERE request_id = ?", (answer["requestId"],))
    assert rows == [(200,)]  # x-request-id is exposed to the page, and the call is in the ledger
    page.goto(other)
    refused = page.evaluate(CALL, [proxy.base_url, key])
    assert "error" in refused and "Failed to fetch" in refused["error"], refused
    page.close()


def test_preflight_needs_no_key_and_echoes_only_listed_origins(
    shared_daemon: Daemon, make_proxy: Callable[..., Proxy]
) -> None:
    proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_CORS_ORIGINS="https://app.example, http://localhost:3000")
    proxy.start()
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    ok = httpx.options(f"{proxy.base_url}/chat/completions", headers={"Origin": "https://app.example", **ask})
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "Authorization" in ok.headers["access-control-allow-headers"]
    bad = httpx.options(f"{proxy.base_url}/chat/completions", headers={"Origin": "https://evil.example", **ask})
    assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers
    unauth = httpx.get(f"{proxy.base_url}/models", headers={"Origin": "http://localhost:3000"})
    assert unauth.status_code == 401 and unauth.headers["access-control-allow-origin"] == "http://localhost:3000"
    other = httpx.get(f"{proxy.base_url}/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(proxy: Proxy) -> None:
    ask = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    r = httpx.options(f"{proxy.base_url}/chat/completions", headers=ask)
    assert "access-control-allow-origin" not in r.headers and r.status_code != 204


SDK_HEADERS = {  # what the official openai JS SDK sends from a browser page (openai-node 4.x / 5.x)
    "X-Stainless-Lang": "js",
    "X-Stainless-Package-Version": "5.23.0",
    "X-Stainless-OS": "Unknown",
    "X-Stainless-Arch": "unknown",
    "X-Stainless-Runtime": "browser:chrome",
    "X-Stainless-Runtime-Version": "131.0.0",
    "X-Stainless-Retry-Count": "0",
    "X-Stainless-Timeout": "600",
    "OpenAI-Project": "proj_abc",
    "OpenAI-Organization": "org_abc",
}
STREAM = """async ([url, key, extra]) => {
  try {
    const r = await fetch(url + "/chat/completions", {
      method: "POST",
      headers: {
        "Authorization": "Bearer " + key, "Content-Type": "application/json", "Accept": "application/json", ...extra
      },
      body: JSON.stringify({model: "smollm2", messages: [{role: "user", content: "Hi"}], max_tokens: 3, stream: true}),
    });
    const text = await r.text();
    return {status: r.status, done: text.includes("data: [DONE]"), requestId: r.headers.get("x-request-id")};
  } catch (e) {
    return {error: String(e)};
  }
}"""


def test_a_page_reads_a_streamed_answer_with_the_js_sdks_headers(
    shared_daemon: Daemon, make_proxy: Callable[..., Proxy], page_origins: tuple[str, str], browser: Any
) -> None:
    """Issue 25: a streamed answer had no Access-Control-Allow-Origin (its headers went out before the CORS
    middleware added them) and the preflight refused the X-Stainless-* and OpenAI-Project headers the
    official JS SDK sends: the SDK could not be used from a browser page."""
    allowed, _ = page_origins
    proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_CORS_ORIGINS=allowed).start()
    key = proxy.make_key()
    page = browser.new_page()
    page.goto(allowed)
    plain = page.evaluate(STREAM, [proxy.base_url, key, {}])
    assert plain.get("status") == 200 and plain["done"], plain
    assert plain["requestId"], "x-request-id is not exposed on a streamed answer"
    sdk = page.evaluate(STREAM, [proxy.base_url, key, SDK_HEADERS])
    assert sdk.get("status") == 200 and sdk["done"], sdk
    page.close()
    ask = {
        "Origin": allowed,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": ",".join(h.lower() for h in SDK_HEADERS) + ",authorization,content-type",
    }
    preflight = httpx.options(f"{proxy.base_url}/chat/completions", headers=ask)
    allowed_headers = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {h.lower() for h in SDK_HEADERS} <= allowed_headers
    assert preflight.headers.get_list("vary") == ["Origin"]
