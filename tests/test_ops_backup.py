"""Backup under load and restore into a stopped setup (issue 13), with the real proxy and daemon.

Requests stream through the proxy from three threads while ``llmserver backup`` runs; the copy must
pass ``integrity_check`` and hold every usage row committed before the backup began. ``restore``
refuses while the proxy runs; with the proxy stopped it puts the copy in place (keeping the old
database aside), and the proxy started again serves the keys of the copy.
"""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
from openai import OpenAI

from tests.harness import ROOT, Daemon, Proxy


def llmserver(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmserver.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


class Load:
    """Threads streaming chat completions through the proxy until stopped."""

    def __init__(self, proxy: Proxy, key: str, threads: int = 3) -> None:
        self.stop = threading.Event()
        self.done = 0
        self.errors: list[str] = []
        self._client = OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=60)
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                stream = self._client.chat.completions.create(
                    model="smollm2", messages=[{"role": "user", "content": "Count to five."}], max_tokens=6, stream=True
                )
                for _ in stream:
                    pass
                self.done += 1
            except openai.OpenAIError as exc:
                self.errors.append(repr(exc))

    def finish(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)
        self._client.close()


def request_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT request_id FROM token_usage_events")}
    finally:
        conn.close()


def test_backup_under_load_and_restore_into_a_stopped_setup(
    shared_daemon: Daemon, make_proxy: object, openai_client: object, tmp_path: Path
) -> None:
    proxy: Proxy = make_proxy(shared_daemon.endpoint).start()  # type: ignore[operator]
    key = proxy.make_key("before the backup")
    load = Load(proxy, key)
    try:
        end = time.monotonic() + 60
        while len(proxy.query("SELECT 1 FROM token_usage_events")) < 6 and time.monotonic() < end:
            time.sleep(0.1)
        committed = request_ids(proxy.db_path)  # every row committed before the backup begins
        assert len(committed) >= 6, load.errors
        copy = tmp_path / "backups" / "app-copy.db"
        copy.parent.mkdir()
        made = llmserver("backup", str(copy), env=proxy.env)
        assert made.returncode == 0, made.stderr
        during, end = load.done, time.monotonic() + 60
        while load.done <= during and time.monotonic() < end:  # the load went on after the backup
            time.sleep(0.1)
        assert load.done > during, load.errors
    finally:
        load.finish()
    assert not load.errors, load.errors[:3]
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete", "one self-contained file"
    conn.close()
    assert committed <= request_ids(copy), "a row committed before the backup is missing from it"
    assert llmserver("backup", str(copy), env=proxy.env).returncode == 2, "an existing file is never overwritten"

    later_key = proxy.make_key("after the backup")
    refused = llmserver("restore", str(copy), env=proxy.env)
    assert refused.returncode == 2 and "a running proxy serves" in refused.stderr, refused.stderr
    proxy.stop()
    restored = llmserver("restore", str(copy), env=proxy.env)
    assert restored.returncode == 0, restored.stderr
    kept = list(proxy.db_path.parent.glob("app.db.before-restore-*"))
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    assert "after the backup" in {row[0] for row in sqlite3.connect(kept[0]).execute("SELECT name FROM api_keys")}

    proxy.start()
    proxy.wait_ready()
    client = openai_client(proxy.base_url, key)  # type: ignore[operator]
    answer = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert answer.usage is not None and answer.usage.total_tokens > 0
    try:
        openai_client(proxy.base_url, later_key).models.list()  # type: ignore[operator]
        raise AssertionError("a key made after the backup still works after the restore")
    except openai.AuthenticationError:
        pass


def test_restore_refuses_a_damaged_or_foreign_file(make_proxy: object, tmp_path: Path) -> None:
    proxy: Proxy = make_proxy("ipc:///tmp/llmserver-nobody-here/rt.sock")  # type: ignore[operator]
    assert llmserver("migrate", env=proxy.env).returncode == 0
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.close()
    out = llmserver("restore", str(foreign), env=proxy.env)
    assert out.returncode == 2 and "not an llmserver database" in out.stderr
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    out = llmserver("restore", str(damaged), env=proxy.env)
    assert out.returncode == 2 and "cannot be restored" in out.stderr
    assert request_ids(proxy.db_path) == set(), "the live database is untouched"
