"""Issue 19, the dashboard in a real headless Chromium: success rate, p50/p95 latency and TTFT, tokens
per second and traffic per model, matching rows written to the proxy's real SQLite ledger (the
figures computed here, independently: numpy's percentiles, plain sums); the cards and the machine
monitor refreshing without a reload (the polls flagged ``X-Console-Poll``); the NPU and GPU lines
with memory and temperature from a fake RK3588 board (``LLMSERVER_MONITOR_ROOT``), and "not
available" where a machine has none. Screenshots at 1280 and 390 px (``issue19-dashboard-*.png``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy
import pytest
from playwright.sync_api import Page, expect

from proxy.storage.database import Database
from proxy.storage.usage import UsageEvent, record_usage
from tests.admin import test_admin_browser as shared
from tests.admin.conftest import SESSION_KEY, add_user
from tests.admin.test_console_auth_browser import shoot
from tests.harness import Daemon, Proxy

PHONE, login = shared.PHONE, shared.login
browser, pages = shared.browser, shared.pages  # the Chromium fixtures

pytestmark = pytest.mark.timeout(240)
MODELS = ("m-a", "m-b", "m-c")


def fake_board(root: Path) -> Path:
    """An RK3588's files: NPU load (debugfs), devfreq, thermal zones; and an ``nvidia-smi`` that
    prints ``gpu.csv`` in nvidia-smi's CSV format (a stand-in for hardware this machine lacks)."""
    (root / "proc").mkdir(parents=True)
    (root / "proc/stat").write_text("cpu  4 0 4 8 0\ncpu0 2 0 2 4 0 0 0\ncpu1 2 0 2 4 0 0 0\n")
    (root / "proc/meminfo").write_text("MemTotal: 16000000 kB\nMemAvailable: 4000000 kB\n")
    (root / "sys/kernel/debug/rknpu").mkdir(parents=True)
    (root / "sys/kernel/debug/rknpu/load").write_text("NPU load:  Core0: 12%, Core1:  0%, Core2: 40%,\n")
    (root / "sys/class/devfreq/fdab0000.npu").mkdir(parents=True)
    (root / "sys/class/devfreq/fdab0000.npu/cur_freq").write_text("1000000000\n")
    for i, (name, milli) in enumerate((("soc-thermal", 45250), ("npu-thermal", 41500), ("gpu-thermal", 39000))):
        zone = root / f"sys/class/thermal/thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(f"{name}\n")
        (zone / "temp").write_text(f"{milli}\n")
    (root / "usr/bin").mkdir(parents=True)
    smi = root / "usr/bin/nvidia-smi"
    smi.write_text(f'#!/bin/sh\ncat "{root}/gpu.csv"\n')
    smi.chmod(0o755)
    (root / "gpu.csv").write_text("Test GPU, 37, 1024, 8192, 55\n")
    return root


@pytest.fixture
def board_console(make_proxy: Any, shared_daemon: Daemon, tmp_path: Path) -> Iterator[tuple[Proxy, Path]]:
    board = fake_board(tmp_path / "board")
    proxy: Proxy = make_proxy(
        shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_MONITOR_ROOT=str(board)
    ).start()
    add_user(proxy, "alice")
    yield proxy, board


def write_rows(proxy: Proxy, events: list[UsageEvent]) -> None:
    async def write() -> None:
        async with Database.open(proxy.db_path) as db:
            for event in events:
                await record_usage(db, event)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()


def ledger(now: float) -> list[UsageEvent]:
    """40 rows in the last hour over three models (distinct request counts), 6 of them errors;
    plus one two hours ago and one three days ago (today's and the week's, not the hour's)."""
    events = []
    for i in range(40):
        model = MODELS[0] if i % 2 else MODELS[1] if i % 5 else MODELS[2]
        status = 500 if i % 9 == 4 else 429 if i % 13 == 6 else 200
        ok = status == 200
        events.append(
            UsageEvent(
                request_id=f"dash-{i}",
                api_key_id=None,
                model=model,
                endpoint="chat.completions",
                prompt_tokens=20 + i,
                completion_tokens=(2 + (7 * i) % 40) if ok else 0,
                status=status,
                latency_ms=(150 + (37 * i) % 1000 + 0.3) if ok else 1.2,
                ttft_ms=(20 + (13 * i) % 300 + 0.3) if ok else None,
                created_at=now - 3000 + i * 60,
            )
        )
    events.append(UsageEvent("dash-old", None, "m-a", "chat.completions", 100, 50, 200, created_at=now - 7200))
    events.append(UsageEvent("dash-week", None, "m-c", "chat.completions", 300, 90, 500, created_at=now - 3 * 86400))
    return events


def count(v: int) -> str:
    return f"{v:,}"


def ms(v: float) -> str:
    return f"{v:,.0f} ms" if v >= 10 else f"{v:.1f} ms"


def expected(events: list[UsageEvent], now: float) -> dict[str, Any]:
    """The dashboard's figures, computed here from the rows written."""
    hour = [e for e in events if e.created_at >= now - 3600]
    today = datetime.fromtimestamp(now, timezone.utc).date()
    day = [e for e in events if datetime.fromtimestamp(e.created_at, timezone.utc).date() == today]
    ok = [e for e in hour if 200 <= e.status < 300]
    lat = [e.latency_ms for e in ok if e.latency_ms is not None]
    ttft = [e.ttft_ms for e in ok if e.ttft_ms is not None]
    timed = [e for e in ok if e.ttft_ms is not None and e.latency_ms is not None and e.completion_tokens > 1]
    rate = sum(e.completion_tokens - 1 for e in timed) / sum((e.latency_ms - e.ttft_ms) / 1000 for e in timed)  # type: ignore[operator]
    errors = sum(e.status >= 400 for e in hour)

    def pct(values: list[float], q: int) -> str:
        return ms(float(numpy.percentile(values, q, method="inverted_cdf")))

    def per_model(rows: list[UsageEvent]) -> set[tuple[str, str, str, str]]:
        sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for e in rows:
            sums[e.model][0] += 1
            sums[e.model][1] += e.prompt_tokens + e.completion_tokens
            sums[e.model][2] += e.status >= 400
        return {(m, count(r), count(t), count(x)) for m, (r, t, x) in sums.items()}

    day_errors = sum(e.status >= 400 for e in day)
    return {
        "#hour-requests": count(len(hour)),
        "#hour-errors": count(errors),
        "#hour-success": f"{100 * (len(hour) - errors) / len(hour):.1f} %",
        "#hour-tokens": count(sum(e.prompt_tokens + e.completion_tokens for e in hour)),
        "#hour-latency-p50": pct(lat, 50),
        "#hour-latency-p95": pct(lat, 95),
        "#hour-ttft-p50": pct(ttft, 50),
        "#hour-ttft-p95": pct(ttft, 95),
        "#hour-tps": f"{rate:.1f} tok/s",
        "#today-requests": count(len(day)),
        "#today-success": f"{100 * (len(day) - day_errors) / len(day):.1f} %",
        "#week-requests": count(len(events)),
        "models-hour": per_model(hour),
        "models-today": per_model(day),
    }


def table(page: Page, id_: str) -> set[tuple[str, ...]]:
    rows = page.locator(f"#{id_} tbody tr")
    return {tuple(t.strip() for t in rows.nth(i).locator("td").all_inner_texts()) for i in range(rows.count())}


def check(page: Page, figures: dict[str, Any]) -> None:
    for selector, text in figures.items():
        if selector.startswith("#"):
            expect(page.locator(selector)).to_have_text(text)
    for id_ in ("models-hour", "models-today"):
        assert table(page, id_) == figures[id_], id_


def test_the_dashboard_shows_the_ledgers_figures_and_refreshes_them(board_console: Any, pages: Any) -> None:
    """issue 19: success rate, p50/p95 latency and TTFT, tokens/s, per-model traffic; live refresh."""
    console, board = board_console
    now = time.time()
    events = ledger(now)
    write_rows(console, events)
    page: Page = pages()
    polls: list[dict[str, str]] = []
    page.on("request", lambda r: polls.append(r.headers) if "/admin/api/dashboard" in r.url else None)
    login(page, console, "alice")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    check(page, expected(events, time.time()))
    expect(page.locator("#npu")).to_have_text("load 12 % / 0 % / 40 %, 1000 MHz, 41.5 °C")
    expect(page.locator("#gpu")).to_have_text("Test GPU: load 37 %, memory 1.0 GiB of 8.0 GiB, 55.0 °C")
    expect(page.locator("#temperatures")).to_have_text("soc: 45.2 °C npu: 41.5 °C gpu: 39.0 °C")
    shoot(page, "dashboard")

    page.evaluate("window.notReloaded = true")
    new = UsageEvent("dash-new", None, "m-new", "chat.completions", 7, 9, 200, latency_ms=900.3, ttft_ms=30.3)
    events.append(new)
    write_rows(console, [new])
    (board / "gpu.csv").write_text("Test GPU, 80, 4096, 8192, 71\n")
    (board / "sys/class/thermal/thermal_zone1/temp").write_text("47000\n")
    expect(page.locator("#hour-requests")).to_have_text(count(41), timeout=20_000)  # a poll, not a reload
    check(page, expected(events, time.time()))
    expect(page.locator("#gpu")).to_have_text("Test GPU: load 80 %, memory 4.0 GiB of 8.0 GiB, 71.0 °C", timeout=20_000)
    expect(page.locator("#npu")).to_have_text("load 12 % / 0 % / 40 %, 1000 MHz, 47.0 °C")
    expect(page.locator("#temperatures")).to_have_text("soc: 45.2 °C npu: 47.0 °C gpu: 39.0 °C")
    assert page.evaluate("window.notReloaded") is True
    assert polls and all(h.get("x-console-poll") == "1" for h in polls), polls


def test_the_dashboards_figures_fit_a_phone(board_console: Any, pages: Any) -> None:
    """issue 19: at 390 px every figure is on screen, nothing of the dashboard needs a sideways scroll."""
    console, _ = board_console
    write_rows(console, ledger(time.time()))
    page: Page = pages(phone=True)
    login(page, console, "alice")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    for section in ("#traffic", "#system"):
        wide = page.evaluate(
            f"(() => {{ const s = document.querySelector('{section}'); return [s.scrollWidth, s.clientWidth]; }})()"
        )
        assert wide[0] <= wide[1], (section, wide)
    figures = page.locator("#traffic [data-fig], #traffic td")
    for i in range(figures.count()):
        box = figures.nth(i).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (i, box)
    size = page.locator("#hour-latency-p50").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
    assert size >= 14, size
    shoot(page, "dashboard-phone")


def test_a_machine_without_npu_gpu_or_sensors_says_not_available(
    make_proxy: Any, shared_daemon: Daemon, tmp_path: Path, pages: Any
) -> None:
    """issue 19: no NPU, no GPU, no thermal zone: "not available", on the page and after a refresh;
    an hour without requests shows dashes, not zeros."""
    bare = tmp_path / "bare"
    bare.mkdir()
    console: Proxy = make_proxy(
        shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY, LLMSERVER_MONITOR_ROOT=str(bare)
    ).start()
    add_user(console, "alice")
    page: Page = pages()
    login(page, console, "alice")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    first = page.locator("#updated").inner_text()
    check_absent(page)
    expect(page.locator("#updated")).not_to_have_text(first, timeout=20_000)  # refreshed by the poll
    check_absent(page)


def check_absent(page: Page) -> None:
    expect(page.locator("#npu")).to_have_text("not available (no NPU on this machine)")
    expect(page.locator("#gpu")).to_have_text("not available (no GPU on this machine)")
    expect(page.locator("#temperatures")).to_have_text("not available")
    expect(page.locator("#memory")).to_have_text("not available")
    expect(page.locator("#hour-success")).to_have_text("—")
    expect(page.locator("#hour-latency-p95")).to_have_text("—")
    expect(page.locator("#hour-ttft-p50")).to_have_text("—")
    expect(page.locator("#hour-tps")).to_have_text("—")
    expect(page.locator("#models-hour tbody")).to_have_text("No requests.")
