"""The first request after start against a warm one: does readiness mean ready? (issue 13)

Run on demand (pytest never collects it)::

    .venv/bin/python tests/bench/bench_first_request.py [--runs N] [--warm N]

Each run starts a fresh runtime daemon (demo model, ``n_threads=2``) and a fresh proxy (its own
SQLite file, the default argon2 profile), waits until ``/readyz`` answers 200 (what a load balancer
or systemd's ``READY=1`` waits for), creates a key, then sends the same short chat completion
(``max_tokens=8``, greedy) through one keep-alive connection:

- first: the first request after readiness, with the new key (so it pays one argon2 verification);
- warm: the median of the next ``--warm`` requests with the same (now cached) key;
- new key: then the first request of a second new key, i.e. a warm request plus one argon2
  verification as the proxy really pays it (its thread pool, its database read).

It also times one argon2id verification of the default profile in-process. The target is
``first <= 1.5 * warm + argon2``, with argon2 the in-process time (column ``target``), and the
table prints ``first / new key`` too: 1.0 means the first request after start costs nothing more
than any request with a key never seen before.
Every request asks for the same prompt, so the runtime's prompt cache is in the same state for
the first and the warm ones except for what start-up left cold.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import Daemon, Proxy, clean_env, demo_spec, free_port, proxy_env  # noqa: E402

BODY = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 8,
    "temperature": 0,
}


def argon2_ms() -> float:
    from proxy.auth.apikey import create_password_hasher, verify_secret

    stored = create_password_hasher("default").hash("a-secret-of-some-length-0123456789")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        verify_secret(stored, "a-secret-of-some-length-0123456789")
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def wait_ready(port: int, timeout: float = 120) -> float:
    """Seconds until /readyz said 200."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.02)
    raise RuntimeError("the proxy never became ready")


def chat(conn: http.client.HTTPConnection, key: str) -> float:
    start = time.perf_counter()
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(BODY),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"chat answered {response.status}")
    return (time.perf_counter() - start) * 1000


def one_run(warm_n: int) -> tuple[float, float, float, float]:
    tmp = Path(tempfile.mkdtemp(prefix="llms-first-"))
    try:
        env = clean_env(tmp)
        daemon = Daemon(f"ipc://{tmp}/rt.sock", ["--model", demo_spec(n_threads=2)], env, tmp / "daemon.log")
        port = free_port()
        penv = proxy_env(tmp, daemon.endpoint, port)
        penv["LLMSERVER_ARGON2_PROFILE"] = "default"
        proxy = Proxy(penv, tmp / "app.db", port, tmp / "proxy.log")
        daemon.start(ready_models=())  # the daemon process only; readiness is the proxy's to say
        started = time.monotonic()
        proxy.start()  # returns at /readyz 200 (or with the runtime unreachable)
        try:
            ready_s = wait_ready(port) + (time.monotonic() - started)
            key = proxy.make_key("bench")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            first = chat(conn, key)
            warm = statistics.median(chat(conn, key) for _ in range(warm_n))
            new_key = chat(conn, proxy.make_key("bench-2"))
            conn.close()
            return first, warm, new_key, ready_s
        finally:
            proxy.stop()
            daemon.terminate()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    import logging

    logging.basicConfig(level=logging.ERROR)  # no "not reachable yet" chatter from the harness
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm", type=int, default=9)
    args = parser.parse_args()
    a2 = argon2_ms()
    print(f"argon2id verification (default profile): {a2:.1f} ms")
    print(
        f"{'run':>3} {'ready s':>8} {'first ms':>9} {'warm ms':>8} {'new key ms':>10} {'target ms':>9} "
        f"{'first/new key':>13} {'ok':>3}"
    )
    worst = 0.0
    for run in range(args.runs):
        first, warm, new_key, ready_s = one_run(args.warm)
        target = 1.5 * warm + a2
        worst = max(worst, first / new_key)
        print(
            f"{run:>3} {ready_s:>8.2f} {first:>9.1f} {warm:>8.1f} {new_key:>10.1f} {target:>9.1f} "
            f"{first / new_key:>13.2f} {'yes' if first <= target else 'NO':>3}"
        )
    print(f"worst first/new key: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
