"""Issue 19, charts that can be read, in a real headless Chromium: axes with values and dates, a value
on hover (the SVG ``<title>`` of the column under the pointer), the hourly/daily switch, a key's and a
model's own charts, and a 390 px phone. Screenshots go to ``build/test-artifacts/``
(``issue19-usage-charts-*.png``, ``issue19-key-charts-*.png``)."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from proxy.auth.apikey import create_password_hasher, key_minter
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.usage import UsageEvent, record_usage
from tests.admin import test_admin_browser as shared
from tests.admin.test_console_auth_browser import shoot
from tests.harness import Proxy

PHONE, login, admin_url = shared.PHONE, shared.login, shared.admin_url
browser, pages = shared.browser, shared.pages  # the Chromium fixtures

pytestmark = pytest.mark.timeout(240)
HOUR = 3600.0


def seed(proxy: Proxy) -> tuple[list[UsageEvent], dict[str, int]]:
    """Two keys, two models, requests spread over the last five days (every seventh an error)."""
    now = time.time()

    async def write() -> tuple[list[UsageEvent], dict[str, int]]:
        async with Database.open(proxy.db_path) as db:
            repo = KeyRepository(db, key_minter(create_password_hasher("test")))
            keys = {name: (await repo.create_key(name))[1].id for name in ("alpha", "beta")}
            events = []
            for i in range(60):
                event = UsageEvent(
                    request_id=f"chart-{i}",
                    api_key_id=keys["alpha"] if i % 3 else keys["beta"],
                    model="m-a" if i % 2 else "m-b",
                    endpoint="chat.completions",
                    prompt_tokens=1000 * i,
                    completion_tokens=7,
                    status=500 if i % 7 == 0 else 200,
                    latency_ms=50.0 + 40 * i,
                    created_at=now - (i * 2) * HOUR,
                )
                await record_usage(db, event)
                events.append(event)
            return events, keys

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, write()).result()


def hover_title(page: Page, chart: Locator, needle: str) -> str:
    """Move the pointer over the column whose title contains ``needle``; the title of the hovered column."""
    column = chart.locator("g.col").filter(has=page.locator("title", has_text=needle)).first
    column.hover()
    return chart.locator("g.col:hover > title").text_content() or ""


def test_usage_charts_have_axes_hover_values_and_an_hourly_switch(console: Proxy, pages: Any) -> None:
    """issue 19: not bars without a scale: value and date axes, a value under the pointer, hourly/daily."""
    events, keys = seed(console)
    page: Page = pages()
    login(page, console, "alice")
    page.get_by_role("link", name="Usage", exact=True).click()
    requests = page.locator("#chart-requests")
    expect(requests.locator("figcaption")).to_contain_text("Requests per day")
    y_labels = requests.locator(".axis.y text").all_text_contents()
    assert y_labels[0] == "0" and len(y_labels) >= 3  # a value axis from zero, a few round ticks
    x_labels = requests.locator(".axis.x text").all_text_contents()
    assert len(x_labels) >= 4, x_labels  # dates on the time axis
    assert all(re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", label) for label in x_labels), x_labels
    expect(requests.locator("g.col")).to_have_count(30)  # every day of the default 30, quiet ones too

    today = time.strftime("%Y-%m-%d", time.gmtime())
    todays = [e for e in events if time.strftime("%Y-%m-%d", time.gmtime(e.created_at)) == today]
    title = hover_title(page, requests, today)
    errors = sum(e.status >= 400 for e in todays)
    assert title == f"{today} (UTC): requests {len(todays)}, errors {errors}"
    tokens = hover_title(page, page.locator("#chart-tokens"), today)
    assert f"total {sum(e.prompt_tokens + e.completion_tokens for e in todays):,}" in tokens
    latency = hover_title(page, page.locator("#chart-latency"), today)
    assert re.search(r"p50 [\d,.]+ ms, p95 [\d,.]+ ms$", latency), latency
    shoot(page, "usage-charts")

    page.locator("#bucket-hour").click()  # the switch keeps the filter, draws the last 72 hours by hour
    expect(page).to_have_url(re.compile(r"bucket=hour"))
    expect(page.locator("#bucket-hour")).to_have_attribute("aria-current", "true")
    expect(page.locator("#chart-requests figcaption")).to_contain_text("Requests per hour")
    expect(page.locator("#chart-requests g.col")).to_have_count(72)
    expect(page.locator("#chart-cut")).to_contain_text("last 72 hours")
    newest = events[0]
    hour = time.strftime("%Y-%m-%d %H:00", time.gmtime(newest.created_at))
    assert hover_title(page, page.locator("#chart-requests"), hour).startswith(f"{hour}-")
    assert any(
        re.fullmatch(r"\d\d:00|[A-Z][a-z]{2} \d{1,2}", t)
        for t in page.locator("#chart-requests .axis.x text").all_text_contents()
    )
    shoot(page, "usage-charts-hourly")
    page.locator("#bucket-day").click()
    expect(page.locator("#chart-requests g.col")).to_have_count(30)

    page.locator("#usage-keys").get_by_role("link", name="alpha").click()  # a key's own charts
    expect(page).to_have_url(re.compile(rf"/admin/api-keys/{keys['alpha']}$"))
    alphas = [e for e in todays if e.api_key_id == keys["alpha"]]
    key_title = hover_title(page, page.locator("#key-chart-requests"), today)
    assert key_title.startswith(f"{today} (UTC): requests {len(alphas)},")
    page.locator("#bucket-hour").click()
    expect(page.locator("#key-chart-requests g.col")).to_have_count(72)
    shoot(page, "key-charts")


def test_a_model_has_its_own_charts_and_a_phone_reads_them(console: Proxy, pages: Any) -> None:
    """issue 19: a model's view (the usage page filtered by it, linked from "Top models") and a 390 px phone."""
    events, _ = seed(console)
    page: Page = pages(phone=True)
    login(page, console, "alice")
    page.goto(admin_url(console, "/reports"))
    page.get_by_role("link", name="m-a", exact=True).click()
    expect(page.get_by_role("heading", name="Usage of model m-a")).to_be_visible()
    total = sum(
        int(m)
        for m in re.findall(
            r"requests (\d+)", " ".join(page.locator("#chart-requests g.col title").all_text_contents())
        )
    )
    assert total == sum(e.model == "m-a" for e in events)

    svg = page.locator("#chart-requests svg").bounding_box()
    assert svg is not None and svg["width"] <= PHONE["width"] and svg["x"] >= 0  # fits the phone, no sideways scroll
    label = page.locator("#chart-requests .axis.x text").first.bounding_box()
    assert label is not None and label["height"] >= 9  # text still legible after the viewBox scaling
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, "model-charts")


def test_the_charts_points_in_the_json_api(console: Proxy, admin_client: Any) -> None:
    """issue 19: ``GET /admin/api/usage/series``, the charts' twin for scripts; a bad bucket is a 400 naming it."""
    events, keys = seed(console)
    client = admin_client()
    assert client.login("alice").status_code == 303
    body = client.get("/api/usage/series", params={"bucket": "hour", "key": keys["beta"]}).json()
    assert body["bucket"] == "hour" and body["cut"] is True and len(body["points"]) == 72
    first = datetime.fromisoformat(body["points"][0]["start"].replace("Z", "+00:00")).timestamp()
    betas = [e for e in events if e.api_key_id == keys["beta"] and e.created_at >= first]
    assert sum(p["requests"] for p in body["points"]) == len(betas) > 0
    busy = next(p for p in body["points"] if p["requests"] and not p["errors"])
    assert busy["p50_ms"] > 0 and busy["p95_ms"] >= busy["p50_ms"] and busy["start"].endswith(":00:00Z")
    refused = client.get("/api/usage/series", params={"bucket": "week"})
    assert refused.status_code == 400 and "bucket" in refused.text
    assert client.get("/reports", params={"bucket": "week"}).status_code == 400
