"""Issue 19, the request log's queries (proxy.storage.request_log) on a real SQLite file: each filter is
served by an index in page order (no sort of the ledger), and filters no single index serves are read
in bounded scans that continue where they stopped."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from proxy.storage.database import Database
from proxy.storage.migrate import apply_migrations
from proxy.storage.request_log import Cursor, RequestFilter, _page, request_page
from proxy.storage.usage import UsageEvent, record_usage

T0 = 1_790_000_000.0


def plans(path: Path, flt: RequestFilter, before: Cursor | None, back: bool = False) -> list[str]:
    """The query plan of every statement one page runs."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    _page(conn, flt, before, 51, 1000, back)  # a bounded scan runs the same statement as a page
    conn.set_trace_callback(None)
    return [" | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}")) for sql in statements]


@pytest.mark.parametrize(
    ("flt", "index"),
    [
        (RequestFilter(), "token_usage_events_created_at"),
        (RequestFilter(since=T0, until=T0 + 60), "token_usage_events_created_at"),
        (RequestFilter(api_key_id=1), "token_usage_events_key_time"),
        (RequestFilter(model="m"), "token_usage_events_model_time"),
        (RequestFilter(status_class="5xx"), "token_usage_events_class_time"),
        (RequestFilter(endpoint="completions"), "token_usage_events_endpoint_time"),
        (RequestFilter(api_key_id=1, status_class="4xx", since=T0), "token_usage_events_key_class_time"),
        (RequestFilter(model="m", status_class="5xx"), "token_usage_events_class_time"),
        (RequestFilter(model="m", status_class="2xx", endpoint="completions"), "token_usage_events_model_time"),
    ],
)
def test_each_filter_reads_one_index_in_page_order(tmp_path: Path, flt: RequestFilter, index: str) -> None:
    """issue 19: keyset pages on an index range, never a sort of the ledger and never OFFSET on it."""
    path = tmp_path / "app.db"
    apply_migrations(path)
    for before, back in ((None, False), (Cursor(T0, 10), False), (Cursor(T0, 10), True)):
        found = plans(path, flt, before, back)
        assert index in found[0], found
        assert all("TEMP B-TREE" not in p for p in found), found  # no sort: read in page order


def test_a_rare_combination_pages_in_bounded_scans_without_gaps(tmp_path: Path) -> None:
    """issue 19: key + model matching one row in 37: pages of 5 that look at 25 rows each, short pages
    say so and continue after the last row they examined; every match once, in order."""

    async def run() -> tuple[list[str], list[str], int]:
        async with Database.open(tmp_path / "app.db") as db:
            await db.execute_write(
                lambda c: c.execute(
                    "INSERT INTO api_keys (id, public_id, name, secret_hash, last_four, created_at, updated_at) "
                    "VALUES (1, 'p', 'k', 'x', 'abcd', 0, 0)"
                )
            )
            wanted = []
            for i in range(400):
                event = UsageEvent(
                    request_id=f"r{i:03d}",
                    api_key_id=1,
                    model="rare" if i % 37 == 0 else "common",
                    endpoint="chat.completions",
                    prompt_tokens=1,
                    completion_tokens=1,
                    status=200,
                    created_at=T0 + i // 2,  # ties
                )
                await record_usage(db, event)
                if event.model == "rare":
                    wanted.append(event.request_id)
            seen: list[str] = []
            limited = 0
            before = None
            flt = RequestFilter(api_key_id=1, model="rare")
            for _ in range(100):
                page = await request_page(db, flt, before, limit=5, scan_limit=25)
                assert len(page.rows) <= 5
                seen += [r["request_id"] for r in page.rows]
                limited += page.scan_limited
                if page.next_cursor is None:
                    break
                before = page.next_cursor
            back: list[str] = []
            while page.previous_cursor is not None:  # and the way back, from the oldest page
                page = await request_page(db, flt, limit=5, scan_limit=25, after=page.previous_cursor)
                back = [r["request_id"] for r in page.rows] + back
            assert back == seen[: len(back)] and len(back) >= len(seen) - 5
            return seen, wanted[::-1], limited

    seen, wanted, limited = asyncio.run(run())
    assert seen == wanted
    assert limited > 5


def test_the_export_reads_every_row_in_batches_up_to_its_bound(tmp_path: Path) -> None:
    """issue 19: the CSV's rows come in keyset batches, newest first, and stop at ``max_rows``."""
    from proxy.storage.request_log import iter_requests

    async def run() -> tuple[list[list[str]], list[list[str]]]:
        async with Database.open(tmp_path / "app.db") as db:
            for i in range(23):
                event = UsageEvent(f"r{i:02d}", None, "m", "completions", 1, 1, 200, created_at=T0 + i // 4)
                await record_usage(db, event)
            everything = [[r["request_id"] for r in b] async for b in iter_requests(db, RequestFilter(), 100, 5)]
            bounded = [[r["request_id"] for r in b] async for b in iter_requests(db, RequestFilter(), 12, 5)]
            return everything, bounded

    everything, bounded = asyncio.run(run())
    assert [len(b) for b in everything] == [5, 5, 5, 5, 3]
    assert [r for b in everything for r in b] == [f"r{i:02d}" for i in range(22, -1, -1)]
    assert [r for b in bounded for r in b] == [f"r{i:02d}" for i in range(22, 10, -1)]
