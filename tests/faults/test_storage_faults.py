"""Faults under the ledger: the proxy SIGKILLed under load, the disk full, the database locked."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.faults.clients import Streamed, scaled, stream_chat
from tests.faults.fs import remount, tmpfs
from tests.harness import Daemon, Proxy, free_port, proxy_env


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_proxy_sigkilled_under_load_loses_no_delivered_response(shared_daemon: Daemon, make_proxy: object) -> None:
    proxy: Proxy = make_proxy(shared_daemon.endpoint).start()  # type: ignore[operator]
    key = proxy.make_key()
    delivered: list[Streamed] = []
    failed: list[Streamed] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            result = stream_chat(proxy.base_url, key, max_tokens=12, timeout=10)
            if result.done and result.usage is not None and result.error is None:
                delivered.append(result)
            else:
                failed.append(result)
                if stop.is_set() or result.status == 0:
                    return

    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(client)
        end = time.monotonic() + 60
        while (len(delivered) < scaled(4, 60)) and time.monotonic() < end:
            time.sleep(0.1)
        proxy.kill()  # SIGKILL, with streams in flight
        stop.set()
    assert delivered, f"nothing was delivered before the kill: {failed[:3]}"
    assert all(r.status in (0, 200, 503) for r in failed), failed
    assert integrity(proxy.db_path) == "ok"
    ledger = {
        row[0]: row[1:]
        for row in proxy.query("SELECT request_id, prompt_tokens, completion_tokens FROM token_usage_events")
    }
    missing = [r.request_id for r in delivered if r.request_id not in ledger]
    assert not missing, f"{len(missing)} fully delivered responses missing from the ledger"
    for r in delivered:
        assert r.usage is not None
        assert ledger[r.request_id] == (r.usage["prompt_tokens"], r.usage["completion_tokens"])
    print(f"FAULT proxy-sigkill: {len(delivered)} delivered responses, all in the ledger, integrity ok")


def test_disk_full_under_the_database_is_a_503_then_service_returns(
    shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Old code: a bare 500 "internal server error" on a key with a quota, 500 ledger errors on others."""
    tmp = tmp_path_factory.mktemp("diskfull")
    port = free_port()
    with tmpfs(tmp / "db", size="4m") as mount:
        proxy = Proxy(proxy_env(tmp, shared_daemon.endpoint, port), mount / "app.db", port, tmp / "proxy.log")
        proxy.env["LLMSERVER_DATABASE_URL"] = f"sqlite:///{mount}/app.db"
        proxy.start()
        try:
            quota_key = proxy.make_key("quota", token_limit=100_000)
            free_key = proxy.make_key("free")
            assert stream_chat(proxy.base_url, free_key, max_tokens=4).done
            filler = mount / "filler"
            with filler.open("wb") as fh:  # take every byte left
                try:
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                except OSError:
                    pass
            statuses = []
            for key in (quota_key, free_key) * 4:
                result = stream_chat(proxy.base_url, key, max_tokens=4)
                statuses.append(result.status if result.status != 200 else (result.error or {}).get("code"))
                if result.status == 503:
                    assert result.headers.get("retry-after")
            assert 500 not in statuses and statuses.count(503) + statuses.count("service_unavailable") >= 4, statuses
            filler.unlink()
            remount(mount, "8m")
            deadline = time.monotonic() + 10
            while True:
                result = stream_chat(proxy.base_url, quota_key, max_tokens=4)
                if result.done and result.error is None:
                    break
                assert time.monotonic() < deadline, f"no service once space returned: {result}"
                time.sleep(0.2)
        finally:
            proxy.stop()
        assert integrity(mount / "app.db") == "ok"
    log = proxy.log_path.read_text()
    assert "Traceback" not in log and log.count("cannot be written") <= 2, log[-3000:]
    print(f"FAULT disk-full: answers {statuses}, service back once space returned, integrity ok")


LOCKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("ROLLBACK")
    """
)


def test_database_locked_by_another_writer_delays_requests_and_loses_none(
    shared_daemon: Daemon, make_proxy: object
) -> None:
    """Old code (lock held over 5 s): bare 500s, "unhandled error" tracebacks, 31 rows for 32 requests."""
    proxy: Proxy = make_proxy(shared_daemon.endpoint).start()  # type: ignore[operator]
    keys = [proxy.make_key("quota", token_limit=1_000_000), proxy.make_key("free")]
    held = scaled(6, 8)
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(proxy.db_path), str(held)], stdout=subprocess.PIPE)
    assert locker.stdout is not None and locker.stdout.readline().strip() == b"locked"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: stream_chat(proxy.base_url, keys[i % 2], max_tokens=4, timeout=60), range(8)))
    locker.wait(30)
    locker.stdout.close()
    for r in results:
        assert r.status == 200 and r.done and r.error is None, r
    ids = {row[0] for row in proxy.query("SELECT request_id FROM token_usage_events")}
    assert all(r.request_id in ids for r in results)
    log = proxy.log_path.read_text()
    assert "Traceback" not in log and "unhandled" not in log
    assert os.path.exists(proxy.db_path) and integrity(proxy.db_path) == "ok"
    print(f"FAULT db-locked {held:.0f} s: {len(results)} requests waited, all answered and in the ledger")
