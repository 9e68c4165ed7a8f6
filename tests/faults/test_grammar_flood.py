"""Issue 18, the grammar flood: hostile schemas from one key while a good client chats.

Before, 20 such requests in 120 s crashed the daemon 9 times and a normal client got 4 answers out of
155. Here four threads send the schemas that crashed it (and the schema mistakes that were 502s) as
fast as they are answered, for 8 s in ``make test`` and 2 minutes under ``make soak``; a good client
streams short chats the whole time. Every hostile request must be a 400, the daemon must never die
(the same process from start to end), every good chat must be answered; the good client's latency,
before and during the flood, is printed for the release note.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import pytest

from tests.faults.clients import SOAK, scaled, stream_chat
from tests.fuzz.test_schema_fuzz import _body, _post
from tests.harness import Daemon, Proxy, demo_spec
from tests.hostile.test_grammar_bounds import CASES as HOSTILE

DURATION = scaled(8, 120)
pytestmark = pytest.mark.timeout(900 if SOAK else 240)


def good_chats(
    proxy: Proxy, key: str, until: float, latencies: list[float], failures: list[Any], at_least: int = 1
) -> None:
    while time.monotonic() < until or len(latencies) < at_least:
        started = time.monotonic()
        result = stream_chat(proxy.base_url, key, content="Say hi.", max_tokens=8, timeout=120)
        if result.status != 200 or result.error or not result.done:
            failures.append((result.status, result.error))
        latencies.append(time.monotonic() - started)


def hostile(proxy: Proxy, key: str, until: float, statuses: dict[int, int], lock: threading.Lock, seed: int) -> None:
    schemas = [schema for schema, _ in HOSTILE.values()]
    i = seed
    while time.monotonic() < until:
        where = ("response_format", "tools")[i % 2]
        status, _ = _post(proxy.port, key, _body(schemas[i % len(schemas)], where))
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
        i += 1


def test_a_grammar_flood_from_one_key_crashes_nothing_and_the_good_client_is_answered(
    make_daemon: type[Daemon], make_proxy: Any
) -> None:
    daemon = make_daemon("--model", demo_spec(n_threads=2))
    daemon.start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    proxy: Proxy = make_proxy(daemon.endpoint).start()
    good, bad = proxy.make_key("good"), proxy.make_key("hostile", token_limit=20)
    baseline: list[float] = []
    failures: list[Any] = []
    good_chats(proxy, good, 0, baseline, failures, at_least=3)

    statuses: dict[int, int] = {}
    lock = threading.Lock()
    latencies: list[float] = []
    until = time.monotonic() + DURATION
    threads = [threading.Thread(target=hostile, args=(proxy, bad, until, statuses, lock, n)) for n in range(4)]
    threads.append(threading.Thread(target=good_chats, args=(proxy, good, until, latencies, failures)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    crashes = 0 if daemon.alive() and daemon.proc.pid == pid else 1
    hostile_total = sum(statuses.values())
    print(
        f"GRAMMAR FLOOD {DURATION:.0f} s: {hostile_total} hostile schema requests {dict(sorted(statuses.items()))},"
        f" daemon crashes {crashes}; good client {len(latencies)} chats, {len(failures)} failed, latency"
        f" p50 {statistics.median(latencies):.2f} s max {max(latencies):.2f} s"
        f" (before the flood: {len(baseline)} chats, p50 {statistics.median(baseline):.2f} s)"
    )
    assert crashes == 0, daemon.log_text()[-3000:]
    assert statuses.keys() == {400}, statuses
    assert hostile_total > 0 and latencies and not failures, failures
    rows = proxy.query("SELECT count(*), coalesce(sum(prompt_tokens + completion_tokens), 0) FROM token_usage_events")
    assert rows[0][0] >= len(latencies)
