"""Issue 19, the request log in a real headless Chromium: filter, page, open a row, follow its key.

Screenshots of the Requests page (all, filtered, a bad filter) and a row's detail go to
``build/test-artifacts/`` at 1280 and 390 px (``issue19-requests-*.png``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.admin import test_admin_browser as shared
from tests.admin.test_console_auth_browser import shoot
from tests.admin.test_request_log import ROWS, seed
from tests.harness import Proxy

PHONE, login, admin_url = shared.PHONE, shared.login, shared.admin_url
browser, pages = shared.browser, shared.pages  # the Chromium fixtures

pytestmark = pytest.mark.timeout(240)


def client_ids(page: Page) -> list[str]:
    return [t.strip() for t in page.locator("#requests tbody td.id").all_inner_texts()]


def test_an_admin_filters_pages_and_opens_a_request(console: Proxy, pages: Any) -> None:
    """issue 19: the first page an admin opens when a user says "it failed"."""
    events, keys = seed(console)
    page: Page = pages()
    login(page, console, "alice")
    page.get_by_role("link", name="Requests", exact=True).click()
    expect(page.get_by_role("heading", name="Requests")).to_be_visible()
    expect(page.locator("#requests tbody tr")).to_have_count(50)
    shoot(page, "requests")

    shown = [client_ids(page)]  # every row once over the pages, newest first
    while page.locator("#older").count():
        page.locator("#older").click()
        expect(page.get_by_role("link", name="Newest")).to_be_visible()
        shown.append(client_ids(page))
    seen = [r for p in shown for r in p]
    assert len(seen) == ROWS == len(set(seen))
    assert seen[0] == events[-1].client_request_id
    page.locator("#newer").click()  # and back one page
    assert client_ids(page) == shown[-2]

    page.get_by_role("link", name="Newest").click()
    form = page.locator("#request-filters")
    form.get_by_label("Key").select_option(str(keys["alpha"]))
    form.get_by_label("Status").select_option("4xx")
    form.get_by_role("button", name="Filter").click()
    wanted = [e for e in events if e.api_key_id == keys["alpha"] and e.status // 100 == 4]
    expect(page.locator("#requests tbody tr")).to_have_count(len(wanted))
    assert set(page.locator("#requests tbody td:nth-child(2)").all_inner_texts()) == {"429"}
    expect(form.get_by_label("Status")).to_have_value("4xx")
    shoot(page, "requests-filtered")

    page.locator("#requests tbody tr").first.get_by_role("link").first.click()
    detail = page.locator("#request-detail")
    newest = max(wanted, key=lambda e: (e.created_at, e.request_id))
    expect(detail).to_contain_text(newest.request_id)
    expect(detail).to_contain_text(f"{newest.ttft_ms:.0f} ms")
    expect(detail).to_contain_text(newest.client_request_id or "")
    shoot(page, "request-detail")

    detail.get_by_role("link", name="alpha").click()  # the key's page, and from it the key's requests
    expect(page).to_have_url(re.compile(rf"/admin/api-keys/{keys['alpha']}$"))
    page.locator("#key-request-log").click()
    expect(page.locator("#request-filters").get_by_label("Key")).to_have_value(str(keys["alpha"]))
    expect(page.locator("#requests tbody tr")).to_have_count(50)

    page.goto(admin_url(console, "/requests?since=yesterday&model=m-a"))
    expect(page.get_by_role("alert")).to_contain_text("since: must be a time")
    expect(page.locator("#request-filters").get_by_label("Model")).to_have_value("m-a")
    shoot(page, "requests-bad-filter")


def test_on_a_phone_the_table_scrolls_with_time_and_status_first(console: Proxy, pages: Any) -> None:
    """issue 19: at 390 px the page is no wider than the screen; the table scrolls inside it."""
    seed(console, rows=20)
    page: Page = pages(phone=True)
    login(page, console, "alice")
    page.goto(admin_url(console, "/requests"))
    widths = page.evaluate(
        "() => { const s = document.querySelector('.scroll');"
        " return [document.documentElement.scrollWidth, s.scrollWidth, s.clientWidth]; }"
    )
    assert widths[0] <= PHONE["width"], widths
    assert widths[1] > widths[2], "the table scrolls sideways inside its box"
    headers = page.locator("#requests thead th").all_inner_texts()
    assert headers[:3] == ["Time (UTC)", "Status", "Model"]
    first = page.locator("#requests tbody tr").first.locator("td").nth(1)
    box = first.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"], "the status is on screen"
