"""issue 19, "keys at scale": the key list's search, state filters, sorts and keyset paging
(``GET /admin/api/api-keys``), against the real proxy and its SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from proxy.auth.apikey import create_password_hasher, key_minter
from proxy.storage.api_keys import ApiKey, KeyRepository
from proxy.storage.budget import period_bounds
from proxy.storage.database import Database
from tests.admin.conftest import AdminClient, add_user
from tests.harness import Proxy

KEYS = 37


def seed_keys(proxy: Proxy, count: int = KEYS, *, shaped: bool = True) -> list[ApiKey]:
    """``count`` keys, four to a creation time (ties the keyset must break by id), names with
    repeats in other cases, and every state: revoked, expired, exhausted (lifetime and daily), active."""
    now = time.time()
    day_start = period_bounds("daily", now)[0]

    def shape(conn: sqlite3.Connection, ids: list[int]) -> None:
        for i, key_id in enumerate(ids):
            conn.execute(
                "UPDATE api_keys SET created_at = ?, tokens_used = ?, request_count = ?, last_request_at = ?,"
                " name = ? WHERE id = ?",
                (now - 1000 + i // 4, (i * 7) % 11 * 100, i, None if i % 3 == 0 else now - i % 5, _name(i), key_id),
            )
            if i % 5 == 1:
                conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now - 10, key_id))
            elif i % 5 == 2:
                conn.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (now - 10, key_id))
            elif i % 5 == 3:  # exhausted: lifetime limit reached, or this day's
                daily = i % 2 == 1
                conn.execute(
                    "UPDATE api_keys SET token_limit = 100, budget_period = ?, period_start = ?,"
                    " period_tokens_used = ?, tokens_used = 500 WHERE id = ?",
                    ("daily" if daily else None, day_start if daily else None, 150 if daily else 0, key_id),
                )
            elif i % 5 == 4:  # a limit not reached (its daily usage is from an earlier day)
                conn.execute(
                    "UPDATE api_keys SET token_limit = 1000, budget_period = 'daily', period_start = ?,"
                    " period_tokens_used = 5000 WHERE id = ?",
                    (day_start - 86400, key_id),
                )

    async def write() -> list[ApiKey]:
        async with Database.open(proxy.db_path) as db:
            repo = KeyRepository(db, key_minter(create_password_hasher("test")))
            ids = [(await repo.create_key(f"k{i}"))[1].id for i in range(count)]
            if shaped:
                await db.execute_write(lambda conn: shape(conn, ids))
            return [k for k in await repo.list_keys() if k.id in ids]

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, write()).result()


def _name(i: int) -> str:
    return ["Batch", "alpha", "batch", "Zeta", "beta"][i % 5] + f"-{i // 5}" * (i % 2)


ORDERS: dict[str, Any] = {
    "created": (lambda k: (k.created_at, k.id), True),
    "name": (lambda k: (k.name.lower(), k.id), False),
    "last_used": (lambda k: (k.last_request_at or 0, k.id), True),
    "tokens": (lambda k: (k.tokens_used, k.id), True),
}


@pytest.fixture
def keyed(console: Proxy, admin_client: Any) -> tuple[AdminClient, list[ApiKey]]:
    """A viewer's session (viewers may list keys) and the seeded keys."""
    add_user(console, "vera", role="viewer")
    client: AdminClient = admin_client()
    assert client.login("vera").status_code == 303
    return client, seed_keys(console)


def walk(client: AdminClient, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Every page of ``query`` by its ``next`` cursor; the keys in the order served."""
    seen: list[dict[str, Any]] = []
    params = {**query, "limit": limit}
    for _ in range(KEYS + 2):
        r = client.get("/api/api-keys", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["keys"]) <= limit
        seen.extend(body["keys"])
        if body["next"] is None:
            return seen
        params = {**query, "limit": limit, "after": body["next"]}
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("sort", list(ORDERS))
def test_every_sort_pages_without_gaps_or_duplicates(keyed: Any, sort: str) -> None:
    """issue 19: pages of 5 in each sort, with ties on the sort value: every key once, in order."""
    client, keys = keyed
    by, descending = ORDERS[sort]
    seen = walk(client, {"sort": sort}, 5)
    assert [k["id"] for k in seen] == [k.id for k in sorted(keys, key=by, reverse=descending)]


def test_pages_stay_whole_while_keys_are_added(keyed: Any, console: Proxy) -> None:
    """issue 19: a key created between pages (newest, so before the cursor) shifts nothing: no row
    of the old set is shown twice or skipped, as OFFSET paging would."""
    client, keys = keyed
    first = client.get("/api/api-keys", params={"limit": 10}).json()
    assert len(seed_keys(console, 3, shaped=False)) == 3
    rest = walk(client, {"after": first["next"]}, 10)
    ids = [k["id"] for k in first["keys"] + rest]
    assert ids == [k.id for k in sorted(keys, key=ORDERS["created"][0], reverse=True)]


@pytest.mark.parametrize("sort", list(ORDERS))
def test_previous_pages_walk_back_to_the_first(keyed: Any, sort: str) -> None:
    """issue 19: the keys list had only "next". ``previous`` (the ``before`` cursor: the comparison and
    the order flipped, the rows reversed) gives back each page as it was on the way out, in its order,
    and the first page has no ``previous``; a way back that reaches the start is the whole first page."""
    client, _ = keyed
    pages = [client.get("/api/api-keys", params={"sort": sort, "limit": 6}).json()]
    assert pages[0]["previous"] is None
    while pages[-1]["next"] is not None:
        pages.append(client.get("/api/api-keys", params={"sort": sort, "limit": 6, "after": pages[-1]["next"]}).json())
    assert len(pages) == -(-KEYS // 6) and all(p["previous"] for p in pages[1:])
    for earlier, later in zip(reversed(pages[:-1]), reversed(pages[1:]), strict=True):
        back = client.get("/api/api-keys", params={"sort": sort, "limit": 6, "before": later["previous"]}).json()
        assert [k["id"] for k in back["keys"]] == [k["id"] for k in earlier["keys"]]
        assert (back["previous"], back["next"]) == (earlier["previous"], earlier["next"])
    # Six back from the third key would run past the start: the answer is the first page, whole.
    two = client.get("/api/api-keys", params={"sort": sort, "limit": 2}).json()
    second = client.get("/api/api-keys", params={"sort": sort, "limit": 2, "after": two["next"]}).json()
    short = client.get("/api/api-keys", params={"sort": sort, "limit": 6, "before": second["previous"]}).json()
    assert [k["id"] for k in short["keys"]] == [k["id"] for k in pages[0]["keys"]] and short["previous"] is None


@pytest.mark.parametrize("state", ["active", "revoked", "expired", "exhausted"])
def test_state_filter_matches_each_keys_state(keyed: Any, state: str) -> None:
    """issue 19: each state filter gives exactly the keys in that state (exhausted: the limit reached in
    the current period, not a past one), and each row says its state and its quota used."""
    client, keys = keyed
    now = time.time()
    seen = walk(client, {"state": state}, 4)
    expected = {k.id for k in keys if k.listed_state(now) == state}
    assert expected and {k["id"] for k in seen} == expected
    assert {k["state"] for k in seen} == {state}
    if state == "exhausted":
        assert all(k["quota_used"] >= k["token_limit"] for k in seen)


def test_search_by_name_public_id_and_last_four(keyed: Any) -> None:
    """issue 19: ``q`` finds a name by a part of it (case-insensitive, ``%``/``_`` literal), a
    public id or the last four characters of the key."""
    client, keys = keyed
    named = walk(client, {"q": "BATCH", "sort": "name"}, 50)
    assert {k["id"] for k in named} == {k.id for k in keys if "batch" in k.name.lower()}
    assert walk(client, {"q": "%"}, 50) == []
    target = keys[7]
    assert [k["id"] for k in walk(client, {"q": target.public_id}, 50)] == [target.id]
    found = walk(client, {"q": "…" + target.last_four}, 50)
    assert target.id in {k["id"] for k in found}
    both = walk(client, {"q": "batch", "state": "expired"}, 50)
    assert both and all("batch" in k["name"].lower() and k["state"] == "expired" for k in both)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "sleeping"}, "state"),
        ({"sort": "price"}, "sort"),
        ({"limit": "0"}, "limit"),
        ({"limit": "10000"}, "limit"),
        ({"after": "not-a-cursor"}, "after"),
        ({"before": "not-a-cursor"}, "before"),
        ({"before": "WzEsIDFd", "after": "WzEsIDFd"}, "before"),  # both ways at once
        ({"after": "WyJ4IiwgMV0=", "sort": "created"}, "after"),  # a name cursor given to another sort
        ({"q": "x" * 201}, "q"),
        ({"q": "a\u202eb"}, "q"),
    ],
)
def test_bad_query_values_are_400_naming_the_field(keyed: Any, params: dict[str, str], field: str) -> None:
    """issue 19: a bad list parameter is a 400 whose error names it, never a 500 or an ignored value."""
    client, _ = keyed
    r = client.get("/api/api-keys", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"].get("field") == field, r.text
