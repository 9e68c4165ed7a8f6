"""Ledger figures: group-commit throughput and single-request latency, synchronous NORMAL vs FULL.

Run on demand (pytest does not collect it)::

    .venv/bin/python tests/bench/bench_ledger.py [--rows 20000] [--dir /path/on/the/real/disk]
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

from proxy.db import Database
from proxy.keys import KeyRepository
from proxy.ledger import UsageEvent, record_usage
from proxy.quota import Reservation, reserve
from proxy.secret import create_password_hasher


async def bench(directory: Path, synchronous: str, rows: int, concurrency: int) -> None:
    path = directory / f"ledger-{synchronous.lower()}.db"
    async with Database.open(path, synchronous=synchronous) as db:
        _, key = await KeyRepository(db, create_password_hasher("test")).create_key("bench", token_limit=10**12)
        sequence = iter(range(rows))

        async def client() -> None:  # one admitted-and-settled request after another
            for i in sequence:
                held = await reserve(db, key.id, 100)
                assert isinstance(held, Reservation)
                event = UsageEvent(f"r{i}", key.id, "m", "/v1/chat/completions", 10, 20, 200)
                await record_usage(db, event, held)

        before = db.stats.transactions
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        transactions = db.stats.transactions - before
        print(
            f"{synchronous:6} {concurrency:4} concurrent clients: {rows / elapsed:8,.0f} requests/s "
            f"(reserve + settle each), {2 * rows / transactions:5.1f} jobs per transaction"
        )

        latencies = []
        for i in range(200):
            started = time.perf_counter()
            await record_usage(db, UsageEvent(f"lat{i}", key.id, "m", "/v1/x", 1, 1, 200))
            latencies.append((time.perf_counter() - started) * 1000)
        print(f"{synchronous:6} one record_usage alone: median {statistics.median(latencies):.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for synchronous in ("NORMAL", "FULL"):
            for concurrency in (1, 64, 512):
                rows = args.rows if concurrency > 1 else args.rows // 10  # one at a time is slow
                asyncio.run(bench(Path(tmp) / f"c{concurrency}", synchronous, rows, concurrency))


if __name__ == "__main__":
    main()
