"""Issue 19, the request log: ``GET /admin/api/requests`` (+ ``.csv``, ``/{id}``) and the Requests page,
against a real proxy (subprocess, real daemon) and its real SQLite file."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.auth.apikey import create_password_hasher, key_minter
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.usage import UsageEvent, record_usage
from tests.admin.conftest import AdminClient, add_user
from tests.harness import Proxy

ROWS = 130


def seed(proxy: Proxy, rows: int = ROWS) -> tuple[list[UsageEvent], dict[str, int]]:
    """Two keys and ``rows`` ledger rows, three at each timestamp (ties the keyset must order by id),
    keys, models, endpoints and statuses interleaved; the events in insertion order and the key ids."""
    start = time.time() - 3600

    async def write() -> tuple[list[UsageEvent], dict[str, int]]:
        async with Database.open(proxy.db_path) as db:
            repo = KeyRepository(db, key_minter(create_password_hasher("test")))
            keys = {name: (await repo.create_key(name))[1].id for name in ("alpha", "beta")}
            events = []
            for i in range(rows):
                event = UsageEvent(
                    request_id=f"req-{i:04d}",
                    api_key_id=keys["alpha"] if i % 2 else keys["beta"],
                    model="m-a" if i % 3 else "m-b",
                    endpoint="completions" if i % 4 == 0 else "chat.completions",
                    prompt_tokens=10 + i,
                    completion_tokens=i % 7,
                    status=500 if i % 10 == 0 else 429 if i % 7 == 0 else 200,
                    runtime_prompt_tokens=9 + i,
                    runtime_completion_tokens=i % 7,
                    latency_ms=100.0 + i,
                    ttft_ms=20.0 + i,
                    client_request_id="=HYPERLINK(1)" if i == 50 else f"cli-{i}",
                    created_at=start + i // 3,
                )
                await record_usage(db, event)
                events.append(event)
            return events, keys

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, write()).result()


def newest_first(events: list[UsageEvent]) -> list[str]:
    """Request ids in the log's order: newest first, the later row first at equal times."""
    return [e.request_id for e in sorted(events, key=lambda e: (e.created_at, e.request_id), reverse=True)]


@pytest.fixture
def logged(console: Proxy, admin_client: Any) -> tuple[AdminClient, list[UsageEvent], dict[str, int]]:
    """A viewer's session (viewers may read the log) and the seeded ledger."""
    add_user(console, "vera", role="viewer")
    client: AdminClient = admin_client()
    assert client.login("vera").status_code == 303
    events, keys = seed(console)
    return client, events, keys


def walk(client: AdminClient, query: dict[str, Any], limit: int) -> list[str]:
    """Every page of ``query`` by its ``next`` cursor, then back by ``previous`` from the last page
    (which must give the same pages again); the request ids in the order served."""
    pages: list[list[str]] = []
    params = {**query, "limit": limit}
    for _ in range(ROWS + 2):
        r = client.get("/api/requests", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["requests"]) <= limit
        pages.append([row["request_id"] for row in body["requests"]])
        if body["next"] is None:
            break
        params = {**query, "limit": limit, "before": body["next"]}
    back = [pages[-1]]
    while body["previous"] is not None:
        body = client.get("/api/requests", params={**query, "limit": limit, "after": body["previous"]}).json()
        back.insert(0, [row["request_id"] for row in body["requests"]])
    assert [r for p in back for r in p] == [r for p in pages for r in p], "the way back shows the same rows"
    return [r for p in pages for r in p]


def test_keyset_pages_have_no_duplicates_and_no_gaps_with_equal_timestamps(logged: Any) -> None:
    """issue 19: pages of 7 over rows three to a timestamp: every row once, in (time, id) order."""
    client, events, _ = logged
    seen = walk(client, {}, 7)
    assert seen == newest_first(events)
    assert len(set(seen)) == ROWS


@pytest.mark.parametrize(
    "query",
    [
        {"status": "5xx"},
        {"status": "4xx", "model": "m-a"},
        {"endpoint": "completions"},
        {"model": "m-b"},
        {"key": "alpha"},
        {"key": "beta", "status": "2xx", "endpoint": "chat.completions"},
        {"since": "+30", "until": "+60"},
    ],
)
def test_each_filter_pages_through_exactly_its_rows(logged: Any, query: dict[str, str]) -> None:
    """issue 19: key, model, status class, endpoint and time range, alone and together, paged by 4."""
    client, events, keys = logged
    start = events[0].created_at
    q = dict(query)
    if "key" in q:
        q["key"] = str(keys[q["key"]])
    for edge in ("since", "until"):
        if edge in q:
            q[edge] = f"{start + int(q[edge]):.6f}"

    def wanted(e: UsageEvent) -> bool:
        return (
            ("key" not in q or e.api_key_id == int(q["key"]))
            and ("model" not in q or e.model == q["model"])
            and ("status" not in q or e.status // 100 == int(q["status"][0]))
            and ("endpoint" not in q or e.endpoint == q["endpoint"])
            and ("since" not in q or e.created_at >= float(q["since"]))
            and ("until" not in q or e.created_at < float(q["until"]))
        )

    expected = newest_first([e for e in events if wanted(e)])
    assert expected, "the seed has rows for every filter"
    assert walk(client, q, 4) == expected


def test_a_row_holds_what_the_ledger_stores_and_has_a_detail(logged: Any) -> None:
    """issue 19: latency, TTFT, both token counts, the request ids and the key's name; then by id."""
    client, events, keys = logged
    first = client.get("/api/requests", params={"limit": 1}).json()["requests"][0]
    newest = events[-1]
    assert first["request_id"] == newest.request_id
    assert first["key_name"] == ("alpha" if newest.api_key_id == keys["alpha"] else "beta")
    assert (first["latency_ms"], first["ttft_ms"]) == (newest.latency_ms, newest.ttft_ms)
    assert (first["prompt_tokens"], first["runtime_prompt_tokens"]) == (
        newest.prompt_tokens,
        newest.runtime_prompt_tokens,
    )
    assert first["client_request_id"] == newest.client_request_id and first["status_class"] == "2xx"
    detail = client.get(f"/api/requests/{first['id']}")
    assert detail.status_code == 200 and detail.json()["request"] == first
    assert client.get("/api/requests/999999").status_code == 404


def test_a_real_streamed_request_is_logged_with_latency_ttft_and_both_counts(
    console: Proxy, admin_client: Any, openai_client: Any
) -> None:
    """issue 19: a request through the proxy (official client, real daemon) shows up first in the log."""
    client: AdminClient = admin_client()
    client.login("alice")
    client.get("/api-keys")
    created = client.http.post("/api/api-keys", json={"name": "live"}, headers={"X-CSRF-Token": client.csrf}).json()
    llm = openai_client(console.base_url, created["full_key"])
    stream = llm.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=4,
        stream=True,
        extra_headers={"X-Client-Request-Id": "ticket-4711"},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    rows = client.get("/api/requests", params={"key": created["key"]["id"]}).json()["requests"]
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == 200 and row["streamed"] and row["client_request_id"] == "ticket-4711"
    assert row["latency_ms"] > 0 and 0 < row["ttft_ms"] <= row["latency_ms"]
    assert row["completion_tokens"] > 0 and row["runtime_completion_tokens"] > 0


def test_the_csv_is_what_is_filtered_newest_first_and_defused(logged: Any) -> None:
    """issue 19: the export streams every row of the filter (not one page), formulas defused."""
    client, events, _ = logged
    r = client.get("/api/requests.csv", params={"model": "m-a"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["transfer-encoding"] == "chunked" and r.headers["x-row-limit"] == "100000"  # streamed
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["request_id"] for row in table] == newest_first([e for e in events if e.model == "m-a"])
    assert {row["model"] for row in table} == {"m-a"}
    cells = {row["request_id"]: row for row in table}
    assert cells["req-0050"]["client_request_id"] == "'=HYPERLINK(1)"
    assert cells["req-0049"]["latency_ms"] == "149.0" and cells["req-0049"]["created_at"].endswith("+00:00")


BAD = [
    ("key", "alpha"),
    ("key", "99999999999999999999999"),
    ("status", "3xx"),
    ("status", "500"),
    ("since", "yesterday"),
    ("since", "1e300"),
    ("until", "99999-01-01"),
    ("model", "m-a\x00"),
    ("endpoint", "x" * 300),
    ("limit", "0"),
    ("limit", "100000000000"),
    ("before", "1700000000_-1"),
    ("before", "nan_1"),
]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_a_bad_filter_value_is_a_400_naming_it_never_a_500(logged: Any, field: str, value: str) -> None:
    """issue 19: the API says which parameter is wrong; the page says it in words, with the form."""
    client, _, _ = logged
    for path in ("/api/requests", "/api/requests.csv"):
        r = client.get(path, params={field: value})
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["field"] == field and field in r.json()["error"]["message"]
    page = client.get("/requests", params={field: value})
    assert page.status_code == 400
    assert f"{field}: " in page.text and 'id="request-filters"' in page.text


def test_until_before_since_and_a_bad_row_id(logged: Any) -> None:
    client, _, _ = logged
    r = client.get("/api/requests", params={"since": "2026-01-02", "until": "2026-01-01"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "until"
    assert client.get("/api/requests/12345678901234567890123").json()["error"]["field"] == "id"
    assert client.get("/requests/999999").status_code == 404


def test_the_log_needs_a_login(console: Proxy) -> None:
    import httpx2 as httpx

    from tests.admin.conftest import admin_url

    assert httpx.get(admin_url(console, "/api/requests")).status_code == 401
    assert httpx.get(admin_url(console, "/requests"), follow_redirects=False).status_code in (302, 303)


@pytest.mark.parametrize("since", ["1796652873.7485857", "2026-12-07", "2026-12-07T10:11:12", "1796652873"])
def test_a_filter_written_into_a_link_reads_back_the_same(since: str) -> None:
    """issue 19: the Older link and the CSV link carry the page's filter unchanged (to the microsecond)."""
    from proxy.storage.request_log import Cursor, request_filter

    flt = request_filter({"since": since, "key": "3", "status": "5XX", "endpoint": "completions", "model": "m"})
    again = request_filter(flt.query())
    assert again == flt or abs((again.since or 0) - (flt.since or 0)) < 1e-6
    assert again.status_class == "5xx"
    cursor = Cursor(1796652873.7485857, 42)
    assert Cursor.parse(str(cursor)) == cursor


FIELDS = ("key", "model", "status", "endpoint", "since", "until", "before", "after", "limit")


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=40) | st.from_regex(r"[0-9.eE+_:T -]{0,30}")))
def test_any_query_is_a_filter_or_a_filter_error_naming_a_field(query: dict[str, str]) -> None:
    """issue 19: nothing a client can put in the query escapes as anything but a 400 naming its field."""
    from admin_ui.api.requests import parsed
    from proxy.storage.request_log import FilterError

    try:
        parsed(query)
    except FilterError as exc:
        assert exc.field in FIELDS and str(exc).startswith(exc.field)
