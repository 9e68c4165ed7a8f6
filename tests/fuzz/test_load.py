"""Load: many concurrent streaming clients for a fixed time against the real daemon and model.

No errors but designed backpressure (503 with retry-after when the model's queue is full, 429 with
retry-after from a rate window, 429 insufficient_quota when a key's budget is spent), and the
ledger's totals equal what the clients were told they used, exactly, per key.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.faults.clients import SOAK, Streamed, rss_bytes, scaled, stream_chat
from tests.harness import Daemon, Proxy, demo_spec

CLIENTS = 48 if SOAK else 12


def test_concurrent_streams_meet_only_designed_backpressure_and_reconcile_exactly(
    make_daemon: type[Daemon], make_proxy: object
) -> None:
    daemon = make_daemon("--model", demo_spec(n_threads=2), queue_depth=6).start()
    proxy: Proxy = make_proxy(daemon.endpoint).start()  # type: ignore[operator]
    keys = {
        "open": proxy.make_key("open"),
        "windowed": proxy.make_key("windowed", rpm_limit=6),
        "budget": proxy.make_key("budget", token_limit=400),
    }
    names = list(keys)
    results: list[tuple[str, Streamed]] = []
    lock = threading.Lock()
    end = time.monotonic() + scaled(10, 120)
    assert proxy.proc is not None
    peak = [rss_bytes(proxy.proc.pid)]

    def client(i: int) -> None:
        name = names[i % len(names)]
        while time.monotonic() < end:
            result = stream_chat(proxy.base_url, keys[name], max_tokens=8, content=f"Say hello to number {i}.")
            with lock:
                results.append((name, result))
                peak[0] = max(peak[0], rss_bytes(proxy.proc.pid))  # type: ignore[union-attr]
            if result.status in (429, 503):
                time.sleep(float(result.headers.get("retry-after", "1")))

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))

    outcomes = Counter()
    received: Counter[str] = Counter()
    for name, r in results:
        if r.status == 200:
            assert r.done and r.error is None and r.usage is not None, r
            received[name] += r.usage["total_tokens"]
            outcomes["200"] += 1
        elif r.status == 503:
            assert r.headers.get("retry-after"), r
            outcomes[f"503 {r.error and r.error.get('code')}"] += 1
        elif r.status == 429:
            code = (r.error or {}).get("code")
            assert r.headers.get("retry-after") or (
                code == "insufficient_quota" and r.headers.get("x-should-retry") == "false"
            ), r
            outcomes[f"429 {code}"] += 1
        else:
            raise AssertionError(f"not designed backpressure: {r}")
    assert outcomes["200"] > 0
    for name in names:
        [(ledger, used, rows)] = proxy.query(
            "SELECT COALESCE(sum(e.prompt_tokens + e.completion_tokens), 0), k.tokens_used, count(e.id) "
            "FROM api_keys k LEFT JOIN token_usage_events e ON e.api_key_id = k.id WHERE k.name = ?",
            (name,),
        )
        assert ledger == used == received[name], (name, ledger, used, received[name])
        assert rows == sum(1 for n, _ in results if n == name)  # every request left exactly one row
    [(budget_used,)] = proxy.query("SELECT tokens_used FROM api_keys WHERE name = 'budget'")
    assert budget_used <= 400
    assert not any(key in proxy.log_path.read_text() for key in keys.values())
    print(
        f"LOAD {CLIENTS} clients: {len(results)} requests, {dict(outcomes)}, "
        f"{sum(received.values())} tokens reconciled, peak proxy RSS {peak[0] >> 20} MB"
    )
