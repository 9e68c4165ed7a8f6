"""Key verification figures: the cached path's rate and latency, and the cost of a first (argon2) check.

Run on demand (pytest does not collect it)::

    .venv/bin/python tests/bench/bench_keys.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.auth.apikey import create_password_hasher, generate_api_key, hash_secret, key_minter, verify_secret
from proxy.auth.verifier import KeyVerifier
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database


def bench_argon2(rounds: int) -> None:
    hasher = create_password_hasher("default")
    secret = generate_api_key()[2]
    hashed = hash_secret(secret, hasher)
    costs = []
    for _ in range(rounds):
        started = time.perf_counter()
        verify_secret(hashed, secret)
        costs.append((time.perf_counter() - started) * 1000)
    print(f"argon2id verify, production parameters (t=3, 64 MiB, p=4): median {statistics.median(costs):.1f} ms")


async def bench_verifier(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Database.open(Path(tmp) / "bench.db") as db:
            repo = KeyRepository(db, key_minter(create_password_hasher("default")))
            full, _ = await repo.create_key("bench")
            verifier = KeyVerifier(db)
            started = time.perf_counter()
            await verifier.verify(full)
            first_ms = (time.perf_counter() - started) * 1000
            print(f"first verification of a key (row read + argon2 in a thread): {first_ms:.1f} ms")

            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                for _ in range(1000):
                    await verifier.verify(full)
                count += 1000
            elapsed = time.perf_counter() - started
            print(
                f"cached verifications: {count / elapsed:,.0f}/s, {elapsed / count * 1e6:.1f} µs each "
                f"(includes the version check every 0.5 s; {verifier.stats.refreshes} checks)"
            )

            refresh_costs = []
            for _ in range(200):
                verifier._checked_at = float("-inf")  # force the once-per-0.5-s version read
                started = time.perf_counter()
                await verifier.verify(full)
                refresh_costs.append((time.perf_counter() - started) * 1e6)
            median = statistics.median(refresh_costs)
            print(f"a verification that also reads the change version: median {median:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--argon2-rounds", type=int, default=5)
    args = parser.parse_args()
    bench_argon2(args.argon2_rounds)
    asyncio.run(bench_verifier(args.seconds))


if __name__ == "__main__":
    main()
