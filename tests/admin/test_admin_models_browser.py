"""The model lifecycle driven from the admin console in a real headless Chromium (issues 9 and 10).

An admin stores a Hugging Face token on the tokens page, "Run"s a gated repository of the Hub
stand-in (the demo model's real GGUF, over a slow link), watches the download progress move on the
Models page, sees the model become running through the proxy's reconciler on a real daemon, and a
chat through the proxy with the official ``openai`` client answers. The token is never on a page or
in a log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.admin.conftest import SESSION_KEY, add_user, admin_url
from tests.admin.test_admin_browser import browser, login, pages  # noqa: F401 (fixtures)
from tests.harness import Daemon, Proxy
from tests.lifecycle.conftest import GATED_REPO, HUB_TOKEN, demo_gguf
from tests.lifecycle.hub import Hub

KEY = "5a" * 32
MODEL = "smol"

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def slow_hub() -> Iterator[Hub]:
    """The Hub stand-in with the demo GGUF in a gated repository, at about 6 s for its 94 MiB."""
    hub = Hub()
    hub.add_repo(GATED_REPO, {"model.Q4_K_M.gguf": demo_gguf()}, gated=True, token=HUB_TOKEN)
    hub.seconds_per_mib = 0.06
    hub.start()
    yield hub
    hub.stop()


def _progress(page: Page) -> float:
    return float(page.locator(f'tr[data-model="{MODEL}"] progress').evaluate("e => e.value"))


def test_an_admin_stores_a_token_runs_a_hub_model_watches_it_download_and_chats_with_it(
    make_daemon: Any,
    make_proxy: Any,
    pages: Any,  # noqa: F811 (the fixture imported above)
    openai_client: Any,
    slow_hub: Hub,
    tmp_path: Path,
) -> None:
    daemon: Daemon = make_daemon("--no-demo").start(ready_models=())
    proxy: Proxy = make_proxy(
        daemon.endpoint,
        LLMSERVER_SESSION_KEY=SESSION_KEY,
        LLMSERVER_ENCRYPTION_KEY=KEY,
        HF_ENDPOINT=slow_hub.endpoint,
        LLMSERVER_HF_CACHE=str(tmp_path / "hf-cache"),
        LLMSERVER_MODEL_CONFIG_DIR=str(tmp_path / "config"),
    ).start()
    add_user(proxy, "alice")
    page: Page = pages()
    login(page, proxy, "alice")

    page.get_by_role("link", name="Hugging Face tokens").click()
    page.get_by_label("Label").fill("hub access")
    page.get_by_label("Token", exact=True).fill(HUB_TOKEN)
    page.get_by_label("Use as the default token").check()
    page.get_by_role("button", name="Store token").click()
    row = page.locator("tr[data-token]")
    expect(row).to_contain_text("hub access")
    expect(row).to_contain_text("…" + HUB_TOKEN[-4:])
    assert HUB_TOKEN not in page.content()

    page.get_by_role("link", name="Models").click()
    page.get_by_label("Repository, optionally with a file").fill(GATED_REPO)
    page.get_by_label("Name (optional)").fill(MODEL)
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("status")).to_contain_text(f"running {MODEL}: model.Q4_K_M.gguf")
    actual = page.locator(f'tr[data-model="{MODEL}"] [data-field="actual_state"]')

    seen: set[float] = set()
    end = time.monotonic() + 60
    while time.monotonic() < end and actual.text_content() != "running":
        value = _progress(page)
        if 0 < value < 100:
            seen.add(value)
        time.sleep(0.2)
    assert len(seen) >= 2, f"the progress bar did not move: {sorted(seen)}"
    expect(actual).to_have_text("running", timeout=90_000)
    assert _progress(page) == 100
    expect(page.locator(f'tr[data-model="{MODEL}"] [data-field="download_state"]')).to_have_text("done")
    assert HUB_TOKEN not in page.content()

    key = proxy.make_key()
    client = openai_client(proxy.base_url, key)
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    assert answer.model == MODEL and answer.choices[0].message.content and answer.usage.completion_tokens > 0

    page.goto(admin_url(proxy, "/audit"))
    for action in ("hf_token.add", "model.run"):
        expect(page.locator("main")).to_contain_text(action)
    assert HUB_TOKEN not in page.content()
    phone: Page = pages(phone=True)  # the Models page on a phone: no sideways scrolling, the forms usable
    login(phone, proxy, "alice")
    phone.goto(admin_url(proxy, "/models"))
    expect(phone.locator(f'tr[data-model="{MODEL}"] [data-field="actual_state"]')).to_have_text("running")
    expect(phone.get_by_role("button", name="Run")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    for log in (proxy.log_path, daemon.log_path):
        assert HUB_TOKEN not in log.read_text()
