"""Tokens per second through the RKLLM binding, with the stand-in library emitting flat out.

Run on demand: ``python tests/bench/bench_rkllm.py [--tokens N] [--layout 1.3]``.
Measures
  1. callback -> RKLLMBackend -> emit (in process), for each layout;
  2. callback -> daemon -> ZeroMQ -> RuntimeClient (when runtime/server.py and runtime/client.py exist).
Target: >= 20,000 tokens/s (a real NPU makes 5-45 tokens/s; the binding must not be what limits).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.api.protocol import GenerateSpec, SamplingParams  # noqa: E402
from runtime.backends.base import ModelConfig  # noqa: E402
from runtime.backends.rkllm.backend import RKLLMBackend  # noqa: E402
from tests.rkllm.fake import Repeat, build_fake, write_script  # noqa: E402

TARGET = 20_000


def bench_backend(library: Path, model: Path, tokens: int, rounds: int) -> float:
    os.environ["LLMSERVER_RKLLM_DEVICE_CHECK"] = "off"
    backend = RKLLMBackend()
    backend.load(ModelConfig("bench", "rkllm", str(model), {"library": str(library)}))
    spec = GenerateSpec("bench", ({"role": "user", "content": "go"},), None, SamplingParams(max_tokens=tokens))
    best = 0.0
    try:
        for _ in range(rounds):
            pieces: list[str] = []
            started = time.perf_counter()
            out = backend.generate(spec, pieces.append, lambda: False)
            elapsed = time.perf_counter() - started
            assert out.completion_tokens == tokens == len(pieces), (out, len(pieces))
            best = max(best, tokens / elapsed)
    finally:
        backend.unload()
    return best


async def _through_daemon(endpoint: str, tokens: int) -> tuple[float, int]:
    from runtime.api.client import RuntimeClient

    async with RuntimeClient(endpoint) as client:
        started = time.perf_counter()
        stream = client.generate(
            "bench", messages=[{"role": "user", "content": "go"}], params=SamplingParams(max_tokens=tokens)
        )
        chars = 0
        async for text in stream:
            chars += len(text)
        elapsed = time.perf_counter() - started
        done = stream.done
        assert done is not None and done.completion_tokens == tokens and chars == tokens, (done, chars)
        return tokens / elapsed, done.completion_tokens


def bench_daemon(library: Path, model: Path, tokens: int) -> float | None:
    if not (ROOT / "runtime" / "server.py").exists() or not (ROOT / "runtime" / "client.py").exists():
        return None
    from tests.harness import wait_ready

    with tempfile.TemporaryDirectory(prefix="llms-bench-") as tmp:
        endpoint = f"ipc://{tmp}/rt.sock"
        env = {**os.environ, "LLMSERVER_RKLLM_DEVICE_CHECK": "off", "LLMSERVER_RKLLM_LIBRARY": str(library)}
        env.update({"LLMSERVER_RUNTIME_DIR": tmp, "PYTHONPATH": str(ROOT), "LLMSERVER_LOG_LEVEL": "WARNING"})
        cmd = [
            sys.executable,
            "-m",
            "llmserver.commands.runtime",
            "--endpoint",
            endpoint,
            "--model",
            f"bench=rkllm:{model}",
        ]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        try:
            asyncio.run(wait_ready(endpoint, ("bench",), 30.0))
            best = 0.0
            for _ in range(3):
                rate, _ = asyncio.run(_through_daemon(endpoint, tokens))
                best = max(best, rate)
            return best
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layout", choices=("1.2", "1.3", "both"), default="both")
    args = parser.parse_args()
    layouts = ("1.2", "1.3") if args.layout == "both" else (args.layout,)
    ok = True
    with tempfile.TemporaryDirectory(prefix="rkllm-bench-") as tmp:
        out = Path(tmp)
        model = write_script(out / "bench.rkllm", [Repeat(args.tokens, "x")])
        for layout in layouts:
            library = build_fake(out, layout)
            rate = bench_backend(library, model, args.tokens, args.rounds)
            ok &= rate >= TARGET
            print(f"L{layout} callback -> backend -> emit:   {rate:>12,.0f} tokens/s  ({args.tokens:,} tokens)")
        daemon_tokens = min(args.tokens, 50_000)
        model = write_script(out / "daemon.rkllm", [Repeat(daemon_tokens, "x")])
        rate_daemon = bench_daemon(build_fake(out, layouts[-1]), model, daemon_tokens)
        if rate_daemon is None:
            print("daemon: runtime/server.py or runtime/client.py missing; skipped")
        else:
            ok &= rate_daemon >= TARGET
            label = f"L{layouts[-1]} callback -> daemon -> client:"
            print(f"{label:<34} {rate_daemon:>10,.0f} tokens/s  ({daemon_tokens:,} tokens)")
    print(f"target {TARGET:,} tokens/s: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
