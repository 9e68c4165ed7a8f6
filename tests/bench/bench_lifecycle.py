"""Model lifecycle figures: download speed through ``huggingface_hub`` against a plain HTTP read of the
same bytes, and what an idle unload costs the next request (the load) against a warm first token.

Run on demand (pytest does not collect it)::

    .venv/bin/python tests/bench/bench_lifecycle.py [--runs 3]

Both downloads read the demo GGUF (94 MiB) from the tests' Hub stand-in on loopback: **A** a plain
streamed GET with ``urllib`` into a file, **B** ``Downloader.fetch`` (model info, HEAD resolve, redirect,
GET into the hub's cache layout, sha256 check). The load figure is the daemon's ``load`` round trip for
the demo model, which is what a request waits for after an idle unload, next to a warm request's time
to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from proxy.lifecycle.download import Downloader  # noqa: E402
from runtime.api.client import RuntimeClient  # noqa: E402
from runtime.api.models import ModelConfig  # noqa: E402
from tests.harness import clean_env, wait_ready  # noqa: E402
from tests.lifecycle.conftest import DEMO_REPO, demo_gguf  # noqa: E402
from tests.lifecycle.hub import Hub  # noqa: E402

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bench_download(runs: int) -> None:
    hub = Hub()
    hub.add_repo(DEMO_REPO, {FILE: demo_gguf()})
    hub.start()
    size_mib = demo_gguf().stat().st_size / 2**20
    sha = hub.repos[DEMO_REPO].files[FILE].sha256
    plain, ours = [], []
    try:
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                with urllib.request.urlopen(f"{hub.endpoint}/cdn/{sha}") as r, open(Path(tmp) / "f", "wb") as f:
                    shutil.copyfileobj(r, f, 1 << 20)
                plain.append(time.perf_counter() - started)
                started = time.perf_counter()
                Downloader(Path(tmp) / "cache", hub.endpoint).fetch(DEMO_REPO, files=[FILE])
                ours.append(time.perf_counter() - started)
    finally:
        hub.stop()
    a, b = statistics.median(plain), statistics.median(ours)
    print(f"download {size_mib:.0f} MiB on loopback, median of {runs}:")
    print(f"  A plain GET            {a:6.2f} s  {size_mib / a:6.0f} MiB/s")
    print(f"  B huggingface_hub+sha  {b:6.2f} s  {size_mib / b:6.0f} MiB/s   ({b / a:.2f}x the time of A)")


async def bench_load(runs: int) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        endpoint = f"ipc://{tmp}/rt.sock"
        env = clean_env(Path(tmp))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "llmserver.commands.runtime", "--endpoint", endpoint, "--no-demo"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_ready(endpoint, (), 60)
            async with RuntimeClient(endpoint) as client:
                loads, cold, warm = [], [], []
                config = ModelConfig("m", "llamacpp", str(demo_gguf()), {"n_threads": 2})
                for _ in range(runs):
                    started = time.perf_counter()
                    await client.load(config)
                    loads.append(time.perf_counter() - started)
                    cold.append(await _first_token(client))
                    warm.append(await _first_token(client))
                    await client.unload("m")
                    await asyncio.sleep(0.3)
        finally:
            daemon.terminate()
            daemon.wait(30)
    load, first, again = (statistics.median(x) * 1000 for x in (loads, cold, warm))
    print(f"after an idle unload, the next request waits for the load, median of {runs}:")
    print(f"  load of the demo model                 {load:7.0f} ms")
    print(f"  time to first token, first after load  {first:7.0f} ms")
    print(f"  time to first token, warm              {again:7.0f} ms")
    print(f"  a request after an idle unload: first token after about {load + first:.0f} ms instead of {again:.0f} ms")


async def _first_token(client: RuntimeClient) -> float:
    started = time.perf_counter()
    async with client.generate("m", messages=[{"role": "user", "content": "Hi"}], params=None) as stream:
        async for _text in stream:
            break
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bench_download(args.runs)
    asyncio.run(bench_load(args.runs))


if __name__ == "__main__":
    main()
