"""What the runtime daemon costs over calling llama.cpp in-process, on the same model in one run.

Run on demand (pytest never collects it)::

    .venv/bin/python tests/bench/bench_runtime.py [--runs N] [--tokens N] [--round-trips N]

Both paths run the demo GGUF (``runtime.backends.demo.demo_model_path()``) with ``n_threads=2`` and
``n_ctx=2048``, the same prompt, greedy sampling (temperature 0) and ``ignore_eos``, so both
generate exactly ``--tokens`` tokens:

(a) in-process: ``Llama.generate`` driven token by token, each token detokenized through an
    incremental UTF-8 decoder. That is the fastest honest in-process path (``create_completion``
    with ``stream=True`` does more Python work per token, cannot ignore EOS, and re-detokenizes
    the tail for its stop checks), and it is the same work the daemon's llamacpp backend does
    per token, minus the transport;
(b) client + daemon: the real daemon in a subprocess on an ``ipc://`` endpoint in a temporary
    directory, driven by ``RuntimeClient.generate`` from this process;
(c) a 1-token generation both ways (send -> ``done`` for the daemon), whose median difference is
    the protocol overhead per round trip, and a ``ping`` round trip.

Decode tokens/s is (tokens - 1) / (time of the last token - time of the first), measured where
the tokens are seen (the loop in-process; the client for the daemon: deltas may carry several
tokens, the count comes from ``done``). Time to first token starts at the call (in-process) or
just before the request is sent (client). Every run repeats the same prompt and llama-cpp-python
keeps the KV cache and the last logits of an identical prompt, so the first token is sampled
without any prompt work: TTFT is the cost of getting one token to the caller, nothing else. The
1-token runs therefore decode nothing at all and measure the protocol alone.

The machine has two cores, so the paths never run at the same time: the in-process model sits
idle (loaded) while the daemon works, and the daemon sits idle (model loaded, polling) while the
in-process model works; a decode run starts only after llama.cpp's OpenMP threads of the other
path stopped spinning. Repetitions alternate which path goes first. A repetition during which
other processes used more than ``--max-foreign`` of the CPUs is measured again.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.api.client import RuntimeClient  # noqa: E402
from runtime.api.protocol import SamplingParams  # noqa: E402
from runtime.backends.demo import demo_model_path  # noqa: E402
from tests.harness import wait_ready  # noqa: E402

MODEL = "bench"
N_THREADS = 2
N_CTX = 2048
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
# The daemon's sampling defaults (runtime.api.protocol.SamplingParams) with temperature 0: greedy.
SAMPLING = {"temp": 0.0, "top_p": 0.95, "top_k": 40, "repeat_penalty": 1.0}

# llama.cpp's OpenMP helper thread spins for 5-10 ms after a decode before it sleeps: each decode
# run waits this long first, so neither path starts with the other's spinner on a core.
SETTLE_SECONDS = 0.05

DECODE_RATIO_TARGET = 0.95  # daemon decode tok/s >= 0.95 x in-process
TTFT_DELTA_TARGET_MS = 2.0  # daemon TTFT <= in-process + 2 ms
ROUND_TRIP_TARGET_MS = 0.5  # 1-token round trip overhead <= 0.5 ms


@dataclass(frozen=True)
class Run:
    """One generation as seen by its caller."""

    ttft_ms: float
    decode_tps: float
    total_ms: float
    internal_tps: float = 0.0  # the daemon's own decode tok/s from ``done.perf``


def _run(started: float, stamps: list[float], tokens: int, end: float, internal: float = 0.0) -> Run:
    decode_s = stamps[-1] - stamps[0]
    tps = (tokens - 1) / decode_s if tokens > 1 and decode_s > 0 else 0.0
    return Run((stamps[0] - started) * 1000, tps, (end - started) * 1000, internal)


class InProcess:
    """The model loaded in this process, driven the way the daemon's backend drives it."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), n_ctx=N_CTX, n_threads=N_THREADS, verbose=False)

    def generate(self, max_tokens: int) -> Run:
        llm, perf = self.llm, time.perf_counter
        started = perf()
        tokens = llm.tokenize(PROMPT.encode("utf-8"), add_bos=True, special=False)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stamps: list[float] = []
        sampler = llm.generate(tokens, **SAMPLING)
        try:
            for token in sampler:
                decoder.decode(llm.detokenize([token]))
                stamps.append(perf())
                if len(stamps) >= max_tokens:
                    break
        finally:
            sampler.close()
        end = perf()
        assert len(stamps) == max_tokens, (len(stamps), max_tokens)
        return _run(started, stamps, max_tokens, end)

    def close(self) -> None:
        self.llm.close()


async def daemon_generate(client: RuntimeClient, max_tokens: int) -> Run:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    perf = time.perf_counter
    stamps: list[float] = []
    started = perf()
    async with client.generate(MODEL, prompt=PROMPT, params=params) as stream:
        async for _text in stream:
            stamps.append(perf())
    end = perf()
    done = stream.done
    assert done is not None and done.completion_tokens == max_tokens, (done, max_tokens)
    assert stamps, "no delta arrived"
    return _run(started, stamps, max_tokens, end, done.perf.decode_tps)


async def daemon_ping(client: RuntimeClient) -> float:
    started = time.perf_counter()
    await client.ping()
    return (time.perf_counter() - started) * 1000


@contextmanager
def running_daemon(model: Path) -> Iterator[tuple[str, int]]:
    with tempfile.TemporaryDirectory(prefix="llms-bench-") as tmp:
        endpoint = f"ipc://{tmp}/rt.sock"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSERVER_")}
        env.update({"LLMSERVER_RUNTIME_DIR": tmp, "LLMSERVER_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)})
        spec = f"{MODEL}=llamacpp:{model},n_threads={N_THREADS},n_ctx={N_CTX}"
        cmd = [sys.executable, "-m", "llmserver.commands.runtime", "--endpoint", endpoint, "--model", spec]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        try:
            asyncio.run(wait_ready(endpoint, (MODEL,), 120.0))
            print(f"daemon pid {proc.pid} on {endpoint}", file=sys.stderr)
            yield endpoint, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ForeignLoad:
    """CPU that processes other than the bench and its daemon use, as a share of the whole machine.

    The paths are compared on a shared machine; a repetition during which something else ran is
    measured again rather than averaged in.
    """

    def __init__(self, pids: tuple[int, ...]) -> None:
        self._pids = pids
        self._start = self._sample()

    @staticmethod
    def _machine() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:]]
        return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # busy, total (idle, iowait excluded)

    def _ours(self) -> int:
        used = 0
        for pid in self._pids:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
            used += int(fields[11]) + int(fields[12])  # utime, stime of every thread
        return used

    def _sample(self) -> tuple[int, int, int]:
        return (*self._machine(), self._ours())

    def restart(self) -> None:
        self._start = self._sample()

    def share(self) -> float:
        busy, total, ours = self._sample()
        b0, t0, o0 = self._start
        return max(0.0, (busy - b0) - (ours - o0)) / max(1, total - t0)


@dataclass
class Results:
    inproc: list[Run]
    daemon: list[Run]
    inproc_rt: list[float]
    daemon_rt: list[float]
    ping: list[float]
    foreign: list[float]
    discarded: int = 0

    def add(self, part: Results) -> None:
        for name in ("inproc", "daemon", "inproc_rt", "daemon_rt", "ping"):
            getattr(self, name).extend(getattr(part, name))


async def measure(local: InProcess, endpoint: str, daemon_pid: int, args: argparse.Namespace) -> Results:
    res = Results([], [], [], [], [], [])
    load = ForeignLoad((os.getpid(), daemon_pid))
    async with RuntimeClient(endpoint) as client:
        for tokens in (args.tokens, args.tokens, 1):  # warm-up; ends with the prompt's logits cached
            local.generate(tokens)
            await daemon_generate(client, tokens)
        rep = 0
        while rep < args.runs:
            load.restart()
            part = await _repetition(local, client, args, first_local=rep % 2 == 0)
            share = load.share()
            if share > args.max_foreign and res.discarded < args.max_retries:
                res.discarded += 1
                print(f"  other processes used {share:.0%} of the CPUs; measuring again", file=sys.stderr)
                await asyncio.sleep(args.retry_wait)
                continue
            res.add(part)
            res.foreign.append(share)
            rep += 1
            print(f"  repetition {rep}/{args.runs} (foreign load {share:.0%})", file=sys.stderr)
    return res


async def _repetition(local: InProcess, client: RuntimeClient, args: argparse.Namespace, first_local: bool) -> Results:
    """One decode run per path, then ``args.round_trips`` 1-token runs per path and pings."""
    part = Results([], [], [], [], [], [])
    for local_turn in (first_local, not first_local):
        await asyncio.sleep(SETTLE_SECONDS)
        if local_turn:
            part.inproc.append(local.generate(args.tokens))
        else:
            part.daemon.append(await daemon_generate(client, args.tokens))
    # 1-token runs decode nothing (the prompt's logits are cached), so nothing spins after them.
    # They run in blocks, back to back as a busy server sees requests, the first of each block
    # unmeasured: alternating single calls would measure the two models evicting each other from
    # the caches (and idle virtual CPUs waking up), not the protocol.
    await asyncio.sleep(SETTLE_SECONDS)
    for local_turn in (first_local, not first_local):
        for i in range(args.round_trips + 1):
            if local_turn:
                total = local.generate(1).total_ms
            else:
                total = (await daemon_generate(client, 1)).total_ms
            if i:
                (part.inproc_rt if local_turn else part.daemon_rt).append(total)
    for _ in range(args.round_trips):
        part.ping.append(await daemon_ping(client))
    return part


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _row(name: str, values: list[float], tail: float, unit: str, fmt: str = "{:9.2f}") -> str:
    med = statistics.median(values)
    return f"{name:<38}{fmt.format(med)}{fmt.format(_pct(values, tail))}  {unit:<6} n={len(values)}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(res: Results, args: argparse.Namespace) -> bool:
    med: Callable[[list[float]], float] = statistics.median
    i_tps, d_tps = [r.decode_tps for r in res.inproc], [r.decode_tps for r in res.daemon]
    i_ttft, d_ttft = [r.ttft_ms for r in res.inproc], [r.ttft_ms for r in res.daemon]
    print(f"\nmodel {demo_model_path().name}, n_threads={N_THREADS}, n_ctx={N_CTX}, ", end="")
    print(f"{args.tokens} tokens x {args.runs} runs per path, {len(res.daemon_rt)} 1-token round trips")
    print(
        f"other processes' CPU use: median {statistics.median(res.foreign):.1%}, max {max(res.foreign):.1%} "
        f"of the machine; {res.discarded} repetition(s) measured again"
    )
    print(f"{'':<38}{'median':>9}{'p90':>9}")
    print(_row("decode in-process (Llama.generate)", i_tps, 0.1, "tok/s"))
    print(_row("decode client+daemon", d_tps, 0.1, "tok/s"))
    print(_row("  daemon's own (done.perf.decode_tps)", [r.internal_tps for r in res.daemon], 0.1, "tok/s"))
    print(_row("TTFT in-process", i_ttft, 0.9, "ms"))
    print(_row("TTFT client+daemon", d_ttft, 0.9, "ms"))
    print(_row("1-token generate in-process", res.inproc_rt, 0.9, "ms", "{:9.3f}"))
    print(_row("1-token generate client+daemon", res.daemon_rt, 0.9, "ms", "{:9.3f}"))
    print(_row("ping round trip", res.ping, 0.9, "ms", "{:9.3f}"))
    print("(p90 of tok/s is the slow tail: 90% of runs were at least that fast)")
    # Targets two ways: from the medians of all runs, and paired (the median over repetitions of
    # daemon vs in-process measured back to back), which cancels drift in the machine's speed
    # (a virtual machine's neighbours are invisible in /proc/stat).
    n = args.round_trips
    blocks = range(0, len(res.daemon_rt), n)
    rt_pairs = [med(res.daemon_rt[k : k + n]) - med(res.inproc_rt[k : k + n]) for k in blocks]
    checks = [
        (
            f"decode ratio >= {DECODE_RATIO_TARGET}x",
            "{:.3f}x",
            (med(d_tps) / med(i_tps), med([d / i for d, i in zip(d_tps, i_tps, strict=True)])),
            lambda v: v >= DECODE_RATIO_TARGET,
        ),
        (
            f"TTFT delta <= +{TTFT_DELTA_TARGET_MS} ms",
            "{:+.2f} ms",
            (med(d_ttft) - med(i_ttft), med([d - i for d, i in zip(d_ttft, i_ttft, strict=True)])),
            lambda v: v <= TTFT_DELTA_TARGET_MS,
        ),
        (
            f"round-trip overhead <= {ROUND_TRIP_TARGET_MS} ms",
            "{:+.3f} ms",
            (med(res.daemon_rt) - med(res.inproc_rt), med(rt_pairs)),
            lambda v: v <= ROUND_TRIP_TARGET_MS,
        ),
    ]
    print(f"\n{'target':<34}{'from medians':<20}paired")
    passed = True
    for name, fmt, (plain, paired), ok in checks:
        cells = [f"{fmt.format(v):>10} {_verdict(ok(v))}" for v in (plain, paired)]
        print(f"{name:<34}{cells[0]:<20}{cells[1]}")
        passed = passed and ok(plain)
    return passed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=10, help="decode runs per path (default 10)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per decode run (default 128)")
    parser.add_argument("--round-trips", type=int, default=10, help="1-token round trips per path and run (default 10)")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.05,
        help="measure a repetition again when other processes used more than this share of the CPUs (default 0.05)",
    )
    parser.add_argument("--max-retries", type=int, default=40, help="repetitions measured again, at most")
    parser.add_argument("--retry-wait", type=float, default=2.0, help="seconds to wait before that")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.tokens < 2 or args.round_trips < 1:
        parser.error("--runs and --round-trips must be >= 1, --tokens >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = demo_model_path()
    local = InProcess(model)
    try:
        with running_daemon(model) as (endpoint, pid):
            results = asyncio.run(measure(local, endpoint, pid, args))
    finally:
        local.close()
    return 0 if report(results, args) else 1


if __name__ == "__main__":
    sys.exit(main())
