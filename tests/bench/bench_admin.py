"""The admin console's speed targets (issue 9), run on demand (pytest never collects it)::

    .venv/bin/python tests/bench/bench_admin.py [--rows 5000000] [--requests 200] [--chats 400]

1. Usage over a big ledger: a database with ``--rows`` ledger rows (made by SQL in seconds: a
   recursive CTE spreading requests over 90 days, 50 keys, 3 models, 2 endpoints, 2xx/4xx/5xx) and
   the matching rollups (the migration's own GROUP BY). ``llmserver admin serve`` on it; timed:
   the usage page ``/admin/reports`` (logged-in session) and ``/admin/api/usage`` (admin API token),
   each for the default 30 days and for all 90 days; the usage charts by hour, a model's view and a
   key's page with their charts (issue 19, from the hourly rollups; the first answer of each, before
   anything was cached, printed too); the request log (``/admin/requests`` and
   ``/admin/api/requests``, issue 19): the first page and filtered pages 60 days deep by keyset
   cursor, and a combination that matches nothing (one bounded scan); the dashboard (issue 19: the
   page and ``/admin/api/dashboard``, whose last hour is read from the ledger's time index, about
   2,300 rows of the 5 million; ``--hour-rows N`` adds N more in the last hour for a busy board).
   Target: p95 < 100 ms.
2. The rollup's cost on the proxy: the 1-token chat (``max_tokens=1``, sequential, keep-alive
   ``http.client``) through the proxy of this tree against the proxy of the commit before the admin
   console (``--base``, default ``a5850be``, unpacked with ``git archive`` into a temp directory, no
   worktree), both against one runtime daemon with the demo model, in alternating rounds. Target:
   p50 and p99 no worse than +0.2 ms. (The base lacks everything of this branch on the request path:
   the rollup UPSERT, the budget-period columns read by the reservation, the address check; the
   difference is all of it.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from proxy.storage.migrate import MIGRATIONS_DIR, apply_migrations  # noqa: E402
from tests.harness import Daemon, clean_env, demo_spec, free_port  # noqa: E402

SESSION_KEY = secrets.token_hex(64)
FIRST: dict[str, float] = {}  # each path's first answer, before anything it reads was cached
DAY = 86400.0


def fill(path: Path, rows: int, hour_rows: int = 0) -> None:
    """``rows`` ledger rows and their rollups, by SQL (about 40 s for 5 million here); ``hour_rows``
    more in the last hour (the dashboard's window)."""
    apply_migrations(path)
    conn = sqlite3.connect(path)
    now = time.time()
    conn.executescript("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
    conn.executemany(
        "INSERT INTO api_keys (public_id, name, secret_hash, last_four, created_at, updated_at) "
        "VALUES (?, ?, 'x', 'abcd', 0, 0)",
        [(f"bench{i:07d}", f"bench key {i}") for i in range(50)],
    )
    conn.execute(
        """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
        INSERT INTO token_usage_events (request_id, api_key_id, model, endpoint, prompt_tokens,
            completion_tokens, runtime_prompt_tokens, runtime_completion_tokens, status, latency_ms, ttft_ms,
            client_request_id, created_at)
        SELECT 'b' || i, 1 + i % 50, 'model-' || (i % 3),
               CASE WHEN i % 4 = 0 THEN 'completions' ELSE 'chat.completions' END,
               10 + i % 90, 1 + i % 200, 9 + i % 90, 1 + i % 200,
               CASE WHEN i % 97 = 0 THEN 500 WHEN i % 31 = 0 THEN 429 ELSE 200 END,
               50.0 + i % 900, 10.0 + i % 200, 'client-' || i,
               ? - (i * 90.0 * 86400 / ?)
        FROM n
        """,
        (rows, now, rows),
    )
    if hour_rows:
        conn.execute(
            """
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
            INSERT INTO token_usage_events (request_id, api_key_id, model, endpoint, prompt_tokens,
                completion_tokens, status, latency_ms, ttft_ms, created_at)
            SELECT 'h' || i, 1 + i % 50, 'model-' || (i % 3), 'chat.completions', 10 + i % 90, 1 + i % 200,
                   CASE WHEN i % 97 = 0 THEN 500 ELSE 200 END, 50.0 + i % 900, 10.0 + i % 200, ? - i * 3500.0 / ?
            FROM n
            """,
            (hour_rows, now, hour_rows),
        )
    conn.execute("DELETE FROM usage_daily")
    conn.execute(
        """INSERT INTO usage_daily
        SELECT date(created_at, 'unixepoch'), COALESCE(api_key_id, 0), model, endpoint, (status / 100) || 'xx',
               COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), MAX(created_at)
        FROM token_usage_events GROUP BY 1, 2, 3, 4, 5"""
    )
    conn.commit()
    conn.executescript(f"BEGIN; DELETE FROM usage_hourly; DELETE FROM usage_hourly_key; {hourly_backfill()} COMMIT;")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def hourly_backfill() -> str:
    """The hourly rollups' migration's own backfill from the ledger (issue 19's charts)."""
    text = (MIGRATIONS_DIR / "20250110040000_usage_hourly.sql").read_text()
    return text.split("-- backfill:", 1)[1].strip()


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_gets(port: int, path: str, n: int, headers: dict[str, str]) -> list[float]:
    """``n`` timed GETs after 3 untimed ones; the first of those (a cold cache) is ``FIRST[path]``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for i in range(n + 3):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {body[:200]!r}")
        if i >= 3:  # warm-up
            out.append((time.perf_counter() - t0) * 1000)
        elif i == 0:
            FIRST[path] = (time.perf_counter() - t0) * 1000
    conn.close()
    return out


def _cookies(r: http.client.HTTPResponse) -> str:
    """Every cookie the answer sets, as a ``Cookie`` header (the console sets a login cookie and a session one)."""
    return "; ".join(c.split(";")[0] for c in r.msg.get_all("Set-Cookie") or [])


def login_cookie(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/admin/login")
    r = conn.getresponse()
    page = r.read().decode()
    cookie = _cookies(r)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    body = f"csrf={csrf}&username=bench&password=bench-password-123&next=/admin/"
    conn.request(
        "POST",
        "/admin/login",
        body=body,
        headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )
    r = conn.getresponse()
    r.read()
    if r.status != 303:
        raise RuntimeError(f"login failed: {r.status}")
    return _cookies(r)


def env_for(db: Path, tree: Path, **extra: str) -> dict[str, str]:
    env = clean_env(db.parent)
    env.update(
        {"PYTHONPATH": str(tree), "LLMSERVER_DATABASE_URL": f"sqlite:///{db}", "LLMSERVER_SESSION_KEY": SESSION_KEY}
    )
    env.update(extra)
    return env


def cli(env: dict[str, str], tree: Path, *argv: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "llmserver.cli", *argv],
        env=env,
        cwd=tree,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()[-1]


def bench_usage(tmp: Path, rows: int, n: int, keep: Path | None = None, hour_rows: int = 0) -> None:
    db = keep or tmp / "big.db"
    t0 = time.monotonic()
    if db.exists():
        print(f"reusing {db}")
        return _time_usage(db, n)
    fill(db, rows, hour_rows)
    print(
        f"filled {rows + hour_rows:,} ledger rows and their rollups in {time.monotonic() - t0:.0f} s "
        f"({db.stat().st_size / 1e9:.2f} GB)"
    )
    _time_usage(db, n)


def _time_usage(db: Path, n: int) -> None:
    """Time every page of :func:`bench_usage`, with a runtime daemon holding no model (the dashboard
    asks it for its models; without one, each page would wait for the connection to give up)."""
    sock = Path(tempfile.mkdtemp(prefix="llms-bench-", dir="/tmp"))
    daemon = Daemon(f"ipc://{sock}/rt.sock", [], clean_env(db.parent), db.parent / "daemon.log")
    daemon.start(ready_models=())
    try:
        _time_pages(db, n, daemon.endpoint)
    finally:
        daemon.terminate()


def _time_pages(db: Path, n: int, runtime: str) -> None:
    port = free_port()
    env = env_for(
        db,
        ROOT,
        LLMSERVER_ADMIN_BIND_ADDRESS=f"127.0.0.1:{port}",
        LLMSERVER_ARGON2_PROFILE="test",
        LLMSERVER_RUNTIME_ENDPOINT=runtime,
    )
    if not sqlite3.connect(db).execute("SELECT 1 FROM users WHERE username = 'bench'").fetchone():
        cli(env, ROOT, "admin", "create-user", "bench", stdin="bench-password-123\n")
    token = cli(env, ROOT, "admin", "create-token", "bench", "--user", "bench", "--scope", "viewer")
    server = subprocess.Popen(
        [sys.executable, "-m", "llmserver.cli", "admin", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/admin/login")
                break
            except OSError:
                time.sleep(0.1)
        cookie = login_cookie(port)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        since90 = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 90 * DAY))
        cases = [
            ("usage page, 30 days", "/admin/reports", {"Cookie": cookie}),
            ("usage page, 90 days", f"/admin/reports?since={since90}&until={today}", {"Cookie": cookie}),
            ("/admin/api/usage, 30 days", "/admin/api/usage", {"Authorization": f"Bearer {token}"}),
            (
                "/admin/api/usage, 90 days",
                f"/admin/api/usage?since={since90}&until={today}",
                {"Authorization": f"Bearer {token}"},
            ),
            (
                "/admin/api/usage, one key, 90 days",
                f"/admin/api/usage?key=7&since={since90}",
                {"Authorization": f"Bearer {token}"},
            ),
        ]
        cases += chart_cases(cookie, since90, today)
        cases += request_log_cases(cookie, token)
        cases += dashboard_cases(cookie, token)
        for name, path, headers in cases:
            ms = timed_gets(port, path, n, headers)
            p95 = pct(ms, 0.95)
            print(
                f"{name:40s} p50 {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  "
                f"{'PASS' if p95 < 100 else 'MISS'} (< 100 ms)  first {FIRST[path]:6.1f} ms"
            )
    finally:
        server.terminate()
        server.wait(10)


def chart_cases(cookie: str, since90: str, today: str) -> list[tuple[str, str, dict[str, str]]]:
    """The usage charts (issue 19: hourly rollups): hourly buckets, a model's view, a key's page."""
    session = {"Cookie": cookie}
    return [
        ("usage page, hourly (last 72 h of 30 days)", "/admin/reports?bucket=hour", session),
        ("usage page, 90 days, hourly", f"/admin/reports?since={since90}&until={today}&bucket=hour", session),
        ("model view, 30 days", "/admin/reports?model=model-1", session),
        ("model view, hourly", "/admin/reports?model=model-1&bucket=hour", session),
        ("model view, 90 days", f"/admin/reports?model=model-2&since={since90}&until={today}", session),
        ("key page (30 days daily)", "/admin/api-keys/7", session),
        ("key page, hourly", "/admin/api-keys/8?bucket=hour", session),
    ]


def request_log_cases(cookie: str, token: str) -> list[tuple[str, str, dict[str, str]]]:
    """The request log (issue 19): its first page, and filtered pages deep in the past (a keyset
    cursor 60 days back, as the 1000th "Older" click would have it), on the page and in the API."""
    deep = f"{time.time() - 60 * DAY!r}_{2**62}"
    bearer = {"Authorization": f"Bearer {token}"}
    return [
        ("request log page, first page", "/admin/requests", {"Cookie": cookie}),
        (
            "request log page, 5xx model-1, deep",
            f"/admin/requests?status=5xx&model=model-1&before={deep}",
            {"Cookie": cookie},
        ),
        ("/admin/api/requests, first page", "/admin/api/requests", bearer),
        ("/admin/api/requests, key 7 4xx, deep", f"/admin/api/requests?key=7&status=4xx&before={deep}", bearer),
        ("/admin/api/requests, endpoint, deep", f"/admin/api/requests?endpoint=completions&before={deep}", bearer),
        (  # the worst case: a combination no index serves and no row matches (one bounded scan)
            "/admin/api/requests, no match, bounded",
            f"/admin/api/requests?model=model-1&endpoint=none&before={deep}",
            bearer,
        ),
    ]


def dashboard_cases(cookie: str, token: str) -> list[tuple[str, str, dict[str, str]]]:
    """The dashboard (issue 19): the page (it also asks the runtime, which ``admin serve`` here has
    not, and samples the machine) and its figures alone, as the page's poll and scripts read them."""
    return [
        ("dashboard page", "/admin/", {"Cookie": cookie}),
        ("/admin/api/dashboard (poll)", "/admin/api/dashboard", {"Cookie": cookie, "X-Console-Poll": "1"}),
        ("/admin/api/dashboard (token)", "/admin/api/dashboard", {"Authorization": f"Bearer {token}"}),
    ]


def chat_once(conn: http.client.HTTPConnection, key: str) -> float:
    body = json.dumps(
        {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 0}
    )
    t0 = time.perf_counter()
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"chat: {r.status}")
    return (time.perf_counter() - t0) * 1000


def bench_chat(tmp: Path, base: str, chats: int, rounds: int) -> None:
    base_tree = tmp / "base"
    base_tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", base], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base_tree)], input=archive, check=True)
    sock = Path(tempfile.mkdtemp(prefix="llms-bench-", dir="/tmp"))
    daemon = Daemon(f"ipc://{sock}/rt.sock", ["--model", demo_spec(n_threads=2)], clean_env(tmp), tmp / "daemon.log")
    daemon.start()
    sides = {}
    try:
        for name, tree in (("before (base)", base_tree), ("after (this tree)", ROOT)):
            db = tmp / f"{name.split()[0]}.db"
            port = free_port()
            env = env_for(
                db, tree, LLMSERVER_BIND_ADDRESS=f"127.0.0.1:{port}", LLMSERVER_RUNTIME_ENDPOINT=daemon.endpoint
            )
            key = cli(env, tree, "keys", "create", "--name", "bench", "--token-limit", "1000000000")
            proc = subprocess.Popen(
                [sys.executable, "-m", "llmserver.commands.proxy"],
                env=env,
                cwd=tree,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            sides[name] = (proc, port, key)
        for _proc, port, key in sides.values():
            for _ in range(200):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    chat_once(c, key)
                    c.close()
                    break
                except (OSError, RuntimeError):
                    time.sleep(0.1)
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                _, port, key = sides[name]
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                chat_once(c, key)
                samples[name] += [chat_once(c, key) for _ in range(chats // rounds)]
                c.close()
        stats = {n: (statistics.median(s), pct(s, 0.99)) for n, s in samples.items()}
        for name, (p50, p99) in stats.items():
            print(f"1-token chat, {name:18s} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  ({len(samples[name])} requests)")
        (b50, b99), (a50, a99) = stats["before (base)"], stats["after (this tree)"]
        verdict = "PASS" if a50 - b50 <= 0.2 and a99 - b99 <= 0.2 else "MISS"
        print(f"difference: p50 {a50 - b50:+.2f} ms, p99 {a99 - b99:+.2f} ms  {verdict} (<= +0.2 ms)")
    finally:
        for proc, _, _ in sides.values():
            proc.terminate()
            proc.wait(10)
        daemon.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--base", default="a5850be")
    parser.add_argument("--hour-rows", type=int, default=0, help="more ledger rows in the last hour")
    parser.add_argument("--db", type=Path, help="keep the filled database here and reuse it on the next run")
    parser.add_argument("--skip", choices=("usage", "chat"), action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp:
        if "usage" not in args.skip:
            bench_usage(Path(tmp), args.rows, args.requests, args.db, args.hour_rows)
        if "chat" not in args.skip:
            bench_chat(Path(tmp), args.base, args.chats, args.rounds)


if __name__ == "__main__":
    main()
