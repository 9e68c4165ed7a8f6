"""Issue 19, ``GET /admin/api/dashboard``: the dashboard's figures for scripts, matching the rows of the
proxy's real SQLite ledger (computed here); readable by a viewer, refused to the anonymous."""

from __future__ import annotations

import time
from typing import Any

import httpx2 as httpx
import numpy
import pytest

from tests.admin.conftest import add_user, admin_url
from tests.admin.test_dashboard_browser import ledger, write_rows
from tests.harness import Proxy


def test_the_dashboard_api_gives_the_ledgers_figures(console: Proxy, admin_client: Any) -> None:
    """issue 19: success rate, p50/p95 latency and TTFT, tokens/s and per-model traffic as numbers."""
    now = time.time()
    events = ledger(now)
    write_rows(console, events)
    assert httpx.get(admin_url(console, "/api/dashboard")).status_code == 401
    add_user(console, "vera", role="viewer")
    client = admin_client()
    assert client.login("vera").status_code == 303
    r = client.get("/api/dashboard")
    assert r.status_code == 200, r.text
    body = r.json()
    hour = [e for e in events if e.created_at >= body["last_hour"]["since"]]
    ok = [e for e in hour if e.status == 200]
    errors = sum(e.status >= 400 for e in hour)
    figures = body["last_hour"]
    assert (figures["requests"], figures["errors"], figures["sampled"]) == (len(hour), errors, len(ok))
    assert figures["success_rate"] == pytest.approx((len(hour) - errors) / len(hour))
    for name, values in (("latency", [e.latency_ms for e in ok]), ("ttft", [e.ttft_ms for e in ok])):
        for q in (50, 95):
            assert figures[f"{name}_p{q}_ms"] == numpy.percentile(values, q, method="inverted_cdf"), (name, q)
    decode = sum(e.completion_tokens - 1 for e in ok) / sum((e.latency_ms - e.ttft_ms) / 1000 for e in ok)  # type: ignore[operator]
    assert figures["tokens_per_second"] == pytest.approx(decode)
    per_model = {m["model"]: (m["requests"], m["total_tokens"], m["errors"]) for m in figures["by_model"]}
    assert sum(r for r, _, _ in per_model.values()) == len(hour) and set(per_model) == {"m-a", "m-b", "m-c"}
    assert body["last_7_days"]["requests"] == len(events) and "by_model" not in body["last_7_days"]
    assert [m["requests"] for m in body["today"]["by_model"]] == sorted(
        (m["requests"] for m in body["today"]["by_model"]), reverse=True
    )
