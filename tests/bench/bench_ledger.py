"""Ledger figures: group-commit throughput and single-request latency, synchronous NORMAL vs FULL.

Besides throughput it prints the tail of the writer's transactions (BEGIN to COMMIT, timed on the writer
thread) and of one ``record_usage`` at a time: a WAL checkpoint paid inside a commit shows up there as a
rare multi-millisecond commit, i.e. in p99.9 and max rather than in the median.

Run on demand (pytest does not collect it)::

    .venv/bin/python tests/bench/bench_ledger.py [--rows 20000] [--latency-samples 5000] [--dir /real/disk]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from proxy.auth.apikey import create_password_hasher, key_minter
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.jobs import WriteJob
from proxy.storage.usage import Reservation, UsageEvent, record_usage, reserve


class TimedDatabase(Database):
    """A database that times each write transaction on its writer thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commit_ms: list[float] = []

    def _run_batch(self, conn: sqlite3.Connection, batch: list[WriteJob]) -> None:
        started = time.perf_counter()
        super()._run_batch(conn, batch)
        self.commit_ms.append((time.perf_counter() - started) * 1000)


def tail(samples: list[float]) -> str:
    """Median, p99, p99.9 and max of ``samples`` (milliseconds)."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"p50 {at(0.5):.3f}  p99 {at(0.99):.3f}  p99.9 {at(0.999):.3f}  max {ordered[-1]:.3f} ms "
        f"({len(ordered)} samples, {sum(x >= 2 for x in ordered)} >= 2 ms)"
    )


async def bench(directory: Path, synchronous: str, rows: int, concurrency: int, latency_samples: int) -> None:
    path = directory / f"ledger-{synchronous.lower()}.db"
    async with TimedDatabase.open(path, synchronous=synchronous) as db:
        assert isinstance(db, TimedDatabase)
        _, key = await KeyRepository(db, key_minter(create_password_hasher("test"))).create_key(
            "bench", token_limit=10**12
        )
        sequence = iter(range(rows))

        async def client() -> None:  # one admitted-and-settled request after another
            for i in sequence:
                held = await reserve(db, key.id, 100)
                assert isinstance(held, Reservation)
                event = UsageEvent(f"r{i}", key.id, "m", "/v1/chat/completions", 10, 20, 200)
                await record_usage(db, event, held)

        before = db.stats.transactions
        db.commit_ms.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        transactions = db.stats.transactions - before
        print(
            f"{synchronous:6} {concurrency:4} concurrent clients: {rows / elapsed:8,.0f} requests/s "
            f"(reserve + settle each), {2 * rows / transactions:5.1f} jobs per transaction"
        )
        print(f"{'':6} {'':4} write transactions: {tail(db.commit_ms)}")
        if concurrency > 1:
            return

        latencies = []
        db.commit_ms.clear()
        for i in range(latency_samples):
            started = time.perf_counter()
            await record_usage(db, UsageEvent(f"lat{i}", key.id, "m", "/v1/x", 1, 1, 200))
            latencies.append((time.perf_counter() - started) * 1000)
        print(f"{synchronous:6} one record_usage alone:  {tail(latencies)}")
        print(f"{'':6} its write transactions:   {tail(db.commit_ms)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="requests per concurrent run")
    parser.add_argument(
        "--latency-samples", type=int, default=5000, help="sequential record_usage calls timed (one per commit)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for synchronous in ("NORMAL", "FULL"):
            for concurrency in (1, 64, 512):
                rows = args.rows if concurrency > 1 else args.rows // 10  # one at a time is slow
                directory = Path(tmp) / f"c{concurrency}"
                asyncio.run(bench(directory, synchronous, rows, concurrency, args.latency_samples))


if __name__ == "__main__":
    main()
