"""Issue 19, "keys at scale" in a real headless Chromium: search, filter, sort and page the key list,
create a key with an expiry shortcut, and read a key's limits as a viewer.

Screenshots go to ``build/test-artifacts/`` at 1280 and 390 px (``issue19-keys-*.png``).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.admin import test_admin_browser as shared
from tests.admin.conftest import add_user
from tests.admin.test_console_auth_browser import shoot
from tests.admin.test_key_list import KEYS, seed_keys
from tests.harness import Proxy

login, admin_url = shared.login, shared.admin_url
browser, pages = shared.browser, shared.pages  # the Chromium fixtures

pytestmark = pytest.mark.timeout(240)


def listed_ids(page: Page) -> list[int]:
    links = page.locator("#keys tbody td:first-child a")
    return [int(str(h).rsplit("/", 1)[1]) for h in (links.nth(i).get_attribute("href") for i in range(links.count()))]


def test_a_viewer_searches_filters_and_pages_the_keys(console: Proxy, pages: Any) -> None:
    """issue 19: pages of 10 show every key once, newest first, and "previous" walks them back; the
    state filter and the search narrow the list and stay in the form; a bad value is a readable
    message, not a 500."""
    keys = seed_keys(console)
    add_user(console, "vera", role="viewer")
    page: Page = pages()
    login(page, console, "vera")
    page.goto(admin_url(console, "/api-keys?limit=10"))
    expect(page.locator("#keys tbody tr")).to_have_count(10)
    expect(page.locator("#previous-page")).to_have_count(0)
    pages_out = [listed_ids(page)]
    while page.locator("#next-page").count():
        page.locator("#next-page").click()
        expect(page.locator("#first-page")).to_be_visible()
        pages_out.append(listed_ids(page))
    seen = [key_id for ids in pages_out for key_id in ids]
    assert seen == [k.id for k in sorted(keys, key=lambda k: (k.created_at, k.id), reverse=True)]
    assert len(set(seen)) == KEYS
    # The way back (issue 19: there was only "next"): "← Previous" shows each page again, to the first.
    pages_back = [listed_ids(page)]
    while page.locator("#previous-page").count():
        page.locator("#previous-page").click()
        pages_back.append(listed_ids(page))
    assert pages_back == pages_out[::-1]
    expect(page.locator("#first-page")).to_have_count(0)
    expect(page.locator("#next-page")).to_be_visible()

    form = page.locator("#key-filters")
    form.get_by_label("State").select_option("exhausted")
    form.get_by_role("button", name="Show").click()
    now = time.time()
    exhausted = [k for k in keys if k.listed_state(now) == "exhausted"]
    expect(page.locator("#keys tbody tr")).to_have_count(len(exhausted))
    assert set(page.locator("#keys tbody td:nth-child(2)").all_inner_texts()) == {"exhausted"}
    expect(page.locator("#keys tbody meter").first).to_be_visible()
    expect(form.get_by_label("State")).to_have_value("exhausted")
    shoot(page, "keys-exhausted")

    form.get_by_label("State").select_option("")
    form.get_by_label("Search").fill("BATCH")
    form.get_by_label("Sort").select_option("name")
    form.get_by_role("button", name="Show").click()
    batch = sorted((k for k in keys if "batch" in k.name.lower()), key=lambda k: (k.name.lower(), k.id))
    expect(page.locator("#keys tbody tr")).to_have_count(len(batch))
    assert listed_ids(page) == [k.id for k in batch]
    expect(form.get_by_label("Search")).to_have_value("BATCH")
    shoot(page, "keys-search")

    page.goto(admin_url(console, "/api-keys?state=sleeping&q=abc"))
    expect(page.get_by_role("alert")).to_contain_text("state: must be one of")
    expect(page.locator("#key-filters").get_by_label("Search")).to_have_value("abc")
    shoot(page, "keys-bad-filter")


def test_expiry_shortcut_and_limits_on_the_keys_page_for_a_viewer(console: Proxy, pages: Any) -> None:
    """issue 19: "in 30 days" in the create form sets the expiry; the key's page shows its limits
    (windows, models, client networks, budget period and next reset) to a viewer too."""
    add_user(console, "vera", role="viewer")
    admin: Page = pages()
    login(admin, console, "alice")
    admin.goto(admin_url(console, "/api-keys"))
    form = admin.locator("#create-key")
    form.get_by_label("Name").fill("month")
    form.get_by_label("Token limit").fill("1000")
    form.get_by_label("Budget period").select_option("daily")
    form.get_by_label("Requests per minute").fill("60")
    form.get_by_label("Client address allow-list").fill("10.0.0.0/8")
    form.locator("#expires-in").select_option("30d")
    form.get_by_role("button", name="Create key").click()
    expect(admin).to_have_url(re.compile(r"/admin/api-keys/created$"))
    admin.goto(admin_url(console, "/api-keys?q=month"))
    expect(admin.locator("#keys tbody tr")).to_have_count(1)
    in_30_days = datetime.fromtimestamp(time.time() + 30 * 86400, timezone.utc).strftime("%Y-%m-%d")
    expect(admin.locator("#keys tbody tr td").last).to_contain_text(in_30_days)
    key_url = admin.locator("#keys tbody td:first-child a").get_attribute("href")

    viewer: Page = pages()
    login(viewer, console, "vera")
    viewer.goto(admin_url(console, str(key_url).removeprefix("/admin")))
    limits = viewer.locator("#key-limits")
    expect(limits.locator("#key-windows")).to_contain_text("60 requests per minute")
    expect(limits.locator("#key-cidrs")).to_have_text("10.0.0.0/8")
    expect(limits.locator("#key-models")).to_have_text("all models")
    tomorrow = datetime.fromtimestamp(time.time() + 86400, timezone.utc).strftime("%Y-%m-%d")
    expect(limits.locator("#key-next-reset")).to_contain_text(tomorrow)
    expect(limits).to_contain_text(in_30_days)
    expect(viewer.locator("#edit-key")).to_have_count(0)
    shoot(viewer, "key-limits")
