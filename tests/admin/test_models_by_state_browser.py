"""Issue 19, "Models by state", in a real headless Chromium against a real proxy and the real daemon
with the bundled model: a row offers only the actions that fit its state (running, stopped,
downloading, failed), shows its size on disk and in memory, cuts a long error short with the whole
of it on demand; the edit form round trip (a refused form keeps what was typed and says why beside
the field); the Test button answers with a latency, audited and billed to no key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Locator, Page, expect

from runtime.api.client import RuntimeClient
from tests.admin.conftest import SESSION_KEY, add_user, admin_url
from tests.admin.test_admin_browser import browser, login, pages  # noqa: F401 (fixtures)
from tests.harness import Daemon, Proxy
from tests.lifecycle.conftest import DEMO_REPO, demo_gguf
from tests.lifecycle.hub import Hub

pytestmark = pytest.mark.timeout(240)
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALL = ("Download", "Cancel", "Start", "Retry", "Stop", "Test")


@pytest.fixture
def crawling_hub() -> Iterator[Hub]:
    """The Hub stand-in serving the demo GGUF at about 2 s per MiB: a download that stays running."""
    hub = Hub()
    hub.add_repo(DEMO_REPO, {FILE: demo_gguf()})
    hub.seconds_per_mib = 2.0
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture
def models_console(make_proxy: Any, shared_daemon: Daemon, crawling_hub: Hub, tmp_path: Path) -> Iterator[Proxy]:
    proxy: Proxy = make_proxy(
        shared_daemon.endpoint,
        LLMSERVER_SESSION_KEY=SESSION_KEY,
        HF_ENDPOINT=crawling_hub.endpoint,
        LLMSERVER_HF_CACHE=str(tmp_path / "hf-cache"),
        LLMSERVER_MODEL_CONFIG_DIR=str(tmp_path / "config"),
    ).start()
    add_user(proxy, "alice")
    held = _runtime_models(shared_daemon.endpoint)
    yield proxy
    proxy.stop()
    # The daemon is shared: what these tests loaded into it (a model that failed its load included)
    # would be seen by the next test that asks it for its models (doctor's "a healthy setup").
    for name in _runtime_models(shared_daemon.endpoint) - held:
        _unload(shared_daemon.endpoint, name)


def _runtime_models(endpoint: str) -> set[str]:
    async def ask() -> set[str]:
        async with RuntimeClient(endpoint, connect_wait=2) as client:
            return {m.name for m in await client.models()}

    return _in_thread(ask())


def _unload(endpoint: str, name: str) -> None:
    async def unload() -> None:
        async with RuntimeClient(endpoint, connect_wait=2) as client:
            await client.unload(name)
            for _ in range(100):
                if name not in {m.name for m in await client.models()}:
                    return
                await asyncio.sleep(0.1)

    _in_thread(unload())


def _in_thread(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on a thread of its own (playwright's sync API keeps an event loop on this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


T = TypeVar("T")


def _row(page: Page, name: str) -> Locator:
    return page.locator(f'tr[data-model="{name}"]')


def _expect_actions(page: Page, name: str, shown: tuple[str, ...]) -> None:
    """Exactly ``shown`` of the state actions are visible on the model's row (Edit and Remove always)."""
    for label in ALL:
        button = page.get_by_role("button", name=f"{label} {name}", exact=True)
        if label in shown:
            expect(button).to_be_visible(timeout=30_000)
        else:
            expect(button).to_be_hidden(timeout=30_000)
    expect(page.get_by_role("link", name=f"Edit {name}")).to_be_visible()
    expect(page.get_by_role("link", name=f"Remove {name}")).to_be_visible()


def _register(page: Page, name: str, **fields: str) -> None:
    form = page.locator("#register")
    form.get_by_label("Name", exact=True).fill(name)
    for label, value in fields.items():
        form.get_by_label(label).fill(value)
    form.get_by_role("button", name="Register").click()


def test_a_row_offers_only_the_actions_that_fit_its_state_with_sizes_and_a_short_error(
    models_console: Proxy,
    pages: Any,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    """issue 19: no Stop on a stopped model, no Start while downloading, Retry after a failed load."""
    page: Page = pages()
    login(page, models_console, "alice")
    page.goto(admin_url(models_console, "/models"))

    # Running (the daemon's --model, adopted by the reconciler): Stop and Test; its sizes.
    expect(_row(page, "smollm2").locator('[data-field="actual_state"]')).to_have_text("running", timeout=30_000)
    _expect_actions(page, "smollm2", ("Stop", "Test"))
    size_mib = demo_gguf().stat().st_size / 2**20
    expect(_row(page, "smollm2").locator('[data-field="disk_bytes"]')).to_have_text(f"{size_mib:.1f} MiB")
    memory = _row(page, "smollm2").locator('[data-field="memory"]')
    expect(memory).to_have_text(re.compile(r"^\d+\.\d MiB in memory$"))
    held = float(memory.inner_text().split()[0])
    assert size_mib < held < size_mib + 200, held  # the weights and the context's cache

    # Stopped, from a local file: Start only.
    _register(page, "local", **{"or a local path": str(demo_gguf())})
    expect(page.get_by_role("status")).to_contain_text("model local registered")
    _expect_actions(page, "local", ("Start",))

    # Downloading: Cancel only (no Start while downloading, no second Download); then cancelled: Download.
    _register(page, "hub", **{"Hugging Face repository": DEMO_REPO, "File in the repository": FILE})
    _expect_actions(page, "hub", ("Download",))
    page.get_by_role("button", name="Download hub", exact=True).click()
    expect(_row(page, "hub").locator('[data-field="download_state"]')).to_have_text("downloading")
    _expect_actions(page, "hub", ("Cancel",))
    page.get_by_role("button", name="Cancel hub", exact=True).click()
    expect(_row(page, "hub").locator('[data-field="download_state"]')).to_have_text("cancelled", timeout=30_000)
    _expect_actions(page, "hub", ("Download",))

    # Failed to load: Retry and Stop; the error fits the table, the whole of it a click away.
    bad = tmp_path / ("not-a-model-" + "x" * 120 + ".gguf")
    bad.write_text("this is not a GGUF file\n" * 4)
    _register(page, "broken", **{"or a local path": str(bad)})
    page.get_by_role("button", name="Start broken", exact=True).click()
    expect(_row(page, "broken").locator('[data-field="actual_state"]')).to_have_text("failed", timeout=30_000)
    _expect_actions(page, "broken", ("Retry", "Stop"))
    summary = _row(page, "broken").locator('[data-field="error_short"]')
    expect(summary).to_be_visible()
    assert len(summary.inner_text()) <= 80 and summary.inner_text().endswith("…")
    full = _row(page, "broken").locator('[data-field="error"]')
    expect(full).to_be_hidden()
    summary.click()
    expect(full).to_be_visible()
    assert str(bad) in full.inner_text()
    # A form posted from a page older than the state says why instead of acting.
    page.goto(admin_url(models_console, "/models"))
    page.locator('tr[data-model="local"] form[data-action="stop"]').evaluate("f => f.submit()")
    expect(page.get_by_role("alert")).to_contain_text("model 'local' is already wanted stopped")


def test_the_edit_form_round_trip_keeps_what_was_typed_and_says_why_beside_the_field(
    console: Proxy,
    pages: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 19: params (n_ctx, n_threads, keep-alive) in the register form and an edit form."""
    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, "/models"))
    _register(page, "tuned", **{"or a local path": str(demo_gguf()), "Context length": "1024"})
    expect(page.get_by_role("status")).to_contain_text("model tuned registered")
    assert console.query("SELECT params FROM models WHERE name = 'tuned'") == [('{"n_ctx": 1024}',)]

    page.get_by_role("link", name="Edit tuned").click()
    form = page.locator("#edit")
    expect(form.get_by_label("Context length")).to_have_value("1024")
    form.get_by_label("Context length").fill("-5")
    form.get_by_label("Threads").fill("3")
    form.get_by_label("Keep-alive").fill("300")
    form.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/admin/models/tuned/edit$"))
    context = page.locator("#edit").get_by_label("Context length")
    expect(context).to_have_value("-5")
    expect(context).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#n_ctx-error")).to_contain_text("params.n_ctx must be a whole number from 0")
    expect(page.locator("#edit").get_by_label("Threads")).to_have_value("3")
    expect(page.locator("#edit").get_by_label("Keep-alive")).to_have_value("300")
    assert console.query("SELECT params, keep_alive FROM models WHERE name = 'tuned'") == [('{"n_ctx": 1024}', None)]

    page.locator("#edit").get_by_label("Context length").fill("512")
    page.locator("#edit").get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("model tuned saved")
    assert console.query("SELECT params, keep_alive FROM models WHERE name = 'tuned'") == [
        ('{"n_ctx": 512, "n_threads": 3}', 300.0)
    ]
    page.get_by_role("link", name="Edit tuned").click()
    expect(page.locator("#edit").get_by_label("Threads")).to_have_value("3")
    page.goto(admin_url(console, "/audit"))
    expect(page.locator("main")).to_contain_text("model.change")


def test_the_test_button_shows_a_latency_audited_and_billed_to_no_key(
    console: Proxy,
    pages: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    """issue 19: one short generation through the real daemon, like new-api's channel test."""
    page: Page = pages()
    login(page, console, "alice")
    page.goto(admin_url(console, "/models"))
    expect(_row(page, "smollm2").locator('[data-field="actual_state"]')).to_have_text("running", timeout=30_000)
    page.get_by_role("button", name="Test smollm2", exact=True).click(timeout=120_000)  # a loaded CI box is slow
    status = page.get_by_role("status")
    expect(status).to_contain_text(re.compile(r"model smollm2 answered in [\d,]+ ms \(\d+ tokens"), timeout=120_000)
    latency = int(re.search(r"answered in ([\d,]+) ms", status.inner_text()).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < latency < 60_000
    expect(page.locator(".test-answer q")).not_to_be_empty()
    assert console.query("SELECT COUNT(*) FROM token_usage_events") == [(0,)]
    assert console.query("SELECT COUNT(*) FROM admin_audit WHERE action = 'model.test'") == [(1,)]
