"""What our stack (proxy + runtime daemon) costs over llama-cpp-python's own OpenAI server, in one run.

Run on demand (pytest never collects it)::

    .venv/bin/pip install 'llama-cpp-python[server]==0.3.36'   # the peer server's extras
    .venv/bin/python tests/bench/bench_proxy.py [--rounds N] [--requests N] [--streams N] [--rps-seconds S]

Both sides serve the demo GGUF (``runtime.demo.demo_model_path()``) with ``n_threads=2`` and the
default ``n_ctx=2048``, and both get byte-identical request bodies (our proxy ignores the sampling
fields it does not know; they pin llama-cpp-python's defaults to the daemon's: ``top_k=40``,
``repeat_penalty=1.0``), greedy (``temperature=0``):

(A) ``python -m llama_cpp.server --model PATH --model_alias smollm2 --n_threads 2`` (uvicorn,
    FastAPI, no API key: the configuration measured in ``platform-notes.md``);
(B) ``python -m runtime.cli`` on an ``ipc://`` endpoint in a temporary directory plus
    ``python -m proxy.cli`` on loopback with its own SQLite file and a real API key (default argon2
    profile), i.e. auth, token counting, the ZeroMQ hop and the usage-ledger commit per request.

Both sets of servers are up for the whole run but only one side is driven at a time: the other sits
idle with its model loaded. Measurements go in rounds; every round measures each thing on both sides,
and which side goes first alternates between rounds, so drift and noise hit both. Each block starts
with a discarded request (it re-primes the KV cache: both servers reuse the common prompt prefix, so a
repeated request evaluates one prompt token).

1. 1-token chat completion (``max_tokens=1``), sequential, one keep-alive ``http.client`` connection:
   client-side latency from sending to the last body byte. B - A is what our stack adds.
2. Streamed decode: ``/v1/completions`` with a counting prompt (the model keeps counting, so both
   generate ``--stream-tokens`` tokens and finish with ``length``; our proxy has no ``ignore_eos``)
   and a streamed chat. Decode rate = (tokens - 1) / (time of the last text chunk - time of the
   first), tokens being ``max_tokens`` for a ``length`` finish, else the model's own tokenizer count
   of the text (both sides produce the same text; the run counts texts that differ). Time to first
   token = request sent -> first chunk carrying text.
3. Our proxy's authenticated throughput: ``GET /v1/models`` with a cached key, ``--concurrency``
   keep-alive connections from one asyncio client with a minimal HTTP/1.1 reader (aiohttp's client
   would be the bottleneck on two cores), for ``--rps-seconds`` per round; A's unauthenticated
   ``GET /v1/models`` for reference. Then a key never used before: its first request (argon2id
   verification, RFC 9106 low-memory profile) minus the median of the next requests with it.
4. (info) the same 1-token chat through the ``openai`` Python client, whose own overhead is on top.

The client shares the machine's two cores with the servers, so absolute numbers are pessimistic;
differences between A and B are what the targets judge. Pass ``--py-spy DIR`` to record the proxy and
the daemon with py-spy during the run (it perturbs the numbers; for finding where time goes only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.demo import demo_model_path  # noqa: E402

MODEL = "smollm2"
N_THREADS = 2
HOST = "127.0.0.1"
CHAT_MESSAGES = [{"role": "user", "content": "Say hello."}]
STORY_MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]
COUNTING_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"
# llama-cpp-python's server defaults repeat_penalty to 1.1; the daemon samples with 1.0. Same body to
# both sides (the proxy ignores fields it does not know), so both run the same sampler chain.
SAMPLING = {"temperature": 0, "top_p": 0.95, "top_k": 40, "repeat_penalty": 1.0}

P50_TARGET_MS = 1.0  # B adds at most 1 ms at the median of a 1-token chat completion
P99_TARGET_MS = 2.0  # ... and at most 2 ms at p99
DECODE_TARGET = 1.0  # B's streamed decode tokens/s >= A's


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSERVER_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@contextmanager
def process(name: str, cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_http(procs: dict[Path, subprocess.Popen[bytes]], url: str, timeout: float = 120.0, **headers: str) -> None:
    """Until ``url`` lists the model; a process that exits first fails with the tail of its log."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for log, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
                body = json.loads(r.read())
                if r.status == 200 and any(m.get("id") == MODEL for m in body.get("data", [])):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in procs)
    raise RuntimeError(f"{url} not ready in {timeout:.0f}s:\n{tails}")


@dataclass
class Side:
    name: str
    port: int
    pid: int
    key: str | None = None
    extra_pids: dict[str, int] = field(default_factory=dict)

    def headers(self, key: str | None = None) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        key = key or self.key
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h


def start_llama_server(stack: ExitStack, tmp: Path, model: Path) -> Side:
    port = free_port()
    log = tmp / "llama_server.log"
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL,
        "--n_threads", str(N_THREADS), "--port", str(port), "--host", HOST,
    ]  # fmt: skip
    proc = stack.enter_context(process("llama_cpp.server", cmd, clean_env(), log))
    wait_http({log: proc}, f"http://{HOST}:{port}/v1/models")
    return Side("A llama_cpp.server", port, proc.pid)


def create_keys(db_path: Path, n: int) -> list[str]:
    """``n`` keys created the way an admin does (default argon2 profile), before the proxy starts."""
    from proxy.db import Database
    from proxy.keys import KeyRepository

    async def create() -> list[str]:
        async with Database.open(db_path) as db:
            repo = KeyRepository(db)
            return [(await repo.create_key(f"bench-{i}"))[0] for i in range(n)]

    return asyncio.run(create())


def start_stack(stack: ExitStack, tmp: Path, model: Path, fresh_keys: int) -> tuple[Side, list[str]]:
    endpoint = f"ipc://{tmp}/rt.sock"
    dlog = tmp / "daemon.log"
    spec = f"{MODEL}=llamacpp:{model},n_threads={N_THREADS}"
    denv = clean_env(LLMSERVER_RUNTIME_DIR=str(tmp), LLMSERVER_LOG_LEVEL="WARNING")
    daemon = stack.enter_context(
        process(
            "runtime",
            [sys.executable, "-m", "runtime.cli", "--endpoint", endpoint, "--model", spec],
            denv,
            dlog,
        )
    )
    db_path = tmp / "app.db"
    keys = create_keys(db_path, 1 + fresh_keys)
    port = free_port()
    penv = clean_env(
        LLMSERVER_DATABASE_URL=f"sqlite:///{db_path}",
        LLMSERVER_BIND_ADDRESS=f"{HOST}:{port}",
        LLMSERVER_RUNTIME_ENDPOINT=endpoint,
        LLMSERVER_RUNTIME_DIR=str(tmp),
    )
    plog = tmp / "proxy.log"
    proxy = stack.enter_context(process("proxy", [sys.executable, "-m", "proxy.cli"], penv, plog))
    # The first request with the bench key pays its argon2 verification here, not in a measurement.
    wait_http({plog: proxy, dlog: daemon}, f"http://{HOST}:{port}/v1/models", Authorization=f"Bearer {keys[0]}")
    side = Side("B proxy+daemon", port, proxy.pid, keys[0], {"daemon": daemon.pid})
    return side, keys[1:]


# -- client ------------------------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection (http.client: little client-side overhead)."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.http = http.client.HTTPConnection(HOST, side.port, timeout=120)

    def post(self, path: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        data = json.dumps(body).encode()
        headers = self.side.headers()
        perf = time.perf_counter
        started = perf()
        self.http.request("POST", path, data, headers)
        resp = self.http.getresponse()
        raw = resp.read()
        elapsed = (perf() - started) * 1000
        if resp.status != 200:
            raise RuntimeError(f"{self.side.name} {path}: HTTP {resp.status} {raw[:300]!r}")
        return elapsed, json.loads(raw)

    def get(self, path: str, key: str | None = None) -> float:
        headers = self.side.headers(key)
        perf = time.perf_counter
        started = perf()
        self.http.request("GET", path, headers=headers)
        resp = self.http.getresponse()
        raw = resp.read()
        elapsed = (perf() - started) * 1000
        if resp.status != 200:
            raise RuntimeError(f"{self.side.name} GET {path}: HTTP {resp.status} {raw[:300]!r}")
        return elapsed

    def stream(self, path: str, body: dict[str, Any]) -> StreamRun:
        data = json.dumps(body).encode()
        perf = time.perf_counter
        started = perf()
        self.http.request("POST", path, data, self.side.headers())
        resp = self.http.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{self.side.name} {path}: HTTP {resp.status} {resp.read()[:300]!r}")
        stamps: list[float] = []
        pieces: list[str] = []
        finish = None
        while True:
            line = resp.readline()
            if not line:
                break
            now = perf()
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            obj = json.loads(payload)
            for choice in obj.get("choices") or ():
                text = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
                if text:
                    stamps.append(now)
                    pieces.append(text)
                finish = choice.get("finish_reason") or finish
        resp.read()  # the end of the chunked body, so the connection can be reused
        if not stamps:
            raise RuntimeError(f"{self.side.name} {path}: no text streamed")
        return StreamRun(started, stamps, "".join(pieces), finish or "?")

    def reopen(self) -> None:
        """A new connection at the start of a block: uvicorn closes one idle for 5 s (while the other
        side was being measured); the block's warm-up request pays the connect."""
        self.http.close()

    def close(self) -> None:
        self.http.close()


@dataclass
class StreamRun:
    started: float
    stamps: list[float]
    text: str
    finish: str
    tokens: int = 0

    @property
    def ttft_ms(self) -> float:
        return (self.stamps[0] - self.started) * 1000

    @property
    def decode_tps(self) -> float:
        span = self.stamps[-1] - self.stamps[0]
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0

    @property
    def chunk_tps(self) -> float:
        span = self.stamps[-1] - self.stamps[0]
        return (len(self.stamps) - 1) / span if span > 0 else 0.0


async def _raw_worker(port: int, request: bytes, stop_at: float, lat: list[float]) -> int:
    """Sequential keep-alive GETs on one connection until ``stop_at``; the count."""
    reader, writer = await asyncio.open_connection(HOST, port)
    perf, n = time.perf_counter, 0
    try:
        while perf() < stop_at:
            t0 = perf()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                raise RuntimeError(f"port {port}: {head[:200]!r}")
            lower = head.lower()
            i = lower.find(b"content-length:")
            if i < 0:
                raise RuntimeError(f"port {port}: no Content-Length in {head[:300]!r}")
            length = int(lower[i + 15 : lower.index(b"\r\n", i)])
            await reader.readexactly(length)
            lat.append((perf() - t0) * 1000)
            n += 1
    finally:
        writer.close()
    return n


async def requests_per_second(side: Side, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    auth = f"Authorization: Bearer {side.key}\r\n" if side.key else ""
    request = f"GET /v1/models HTTP/1.1\r\nHost: {HOST}:{side.port}\r\n{auth}\r\n".encode()
    lat: list[float] = []
    await asyncio.gather(*(_raw_worker(side.port, request, time.perf_counter() + 0.3, []) for _ in range(concurrency)))
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(_raw_worker(side.port, request, started + seconds, lat) for _ in range(concurrency))
    )
    return sum(counts) / (time.perf_counter() - started), lat


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Results:
    lat: dict[str, list[float]] = field(default_factory=dict)
    completion: dict[str, list[StreamRun]] = field(default_factory=dict)
    chat_stream: dict[str, list[StreamRun]] = field(default_factory=dict)
    rps: dict[str, list[float]] = field(default_factory=dict)
    rps_lat: dict[str, list[float]] = field(default_factory=dict)
    sdk: dict[str, list[float]] = field(default_factory=dict)
    first_verify: list[float] = field(default_factory=list)
    cached_after: list[float] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def one_token_body() -> dict[str, Any]:
    return {"model": MODEL, "messages": CHAT_MESSAGES, "max_tokens": 1, **SAMPLING}


def completion_stream_body(tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "prompt": COUNTING_PROMPT, "max_tokens": tokens, "stream": True, **SAMPLING}


def chat_stream_body(tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": STORY_MESSAGES, "max_tokens": tokens, "stream": True, **SAMPLING}


def measure_latency(conn: Conn, n: int) -> list[float]:
    body = one_token_body()
    conn.reopen()
    conn.post("/v1/chat/completions", body)  # re-prime the KV cache
    gc.disable()
    try:
        return [conn.post("/v1/chat/completions", body)[0] for _ in range(n)]
    finally:
        gc.enable()


def measure_streams(conn: Conn, path: str, body: dict[str, Any], n: int) -> list[StreamRun]:
    conn.reopen()
    conn.stream(path, dict(body, max_tokens=2))  # re-prime the KV cache
    return [conn.stream(path, body) for _ in range(n)]


def measure_sdk(side: Side, n: int) -> list[float]:
    import openai

    client = openai.OpenAI(base_url=f"http://{HOST}:{side.port}/v1", api_key=side.key or "none", max_retries=0)
    extra = {k: v for k, v in SAMPLING.items() if k not in ("temperature", "top_p")}
    try:
        out = []
        for i in range(n + 1):
            t0 = time.perf_counter()
            client.chat.completions.create(
                model=MODEL,
                messages=CHAT_MESSAGES,
                max_tokens=1,
                temperature=0,
                top_p=0.95,
                extra_body=extra,  # type: ignore[arg-type]
            )
            if i:
                out.append((time.perf_counter() - t0) * 1000)
        return out
    finally:
        client.close()


def first_verification(b: Side, key: str, cached_n: int) -> tuple[float, float]:
    conn = Conn(b)
    try:
        conn.get("/v1/models")  # open the connection with the known key
        first = conn.get("/v1/models", key)
        cached = statistics.median(conn.get("/v1/models", key) for _ in range(cached_n))
    finally:
        conn.close()
    return first, cached


def run_rounds(a: Side, b: Side, fresh: list[str], args: argparse.Namespace) -> Results:
    res = Results()
    sides = (a, b)
    for d in (res.lat, res.completion, res.chat_stream, res.rps, res.rps_lat, res.sdk):
        for s in sides:
            d[s.name] = []
    conns = {s.name: Conn(s) for s in sides}
    try:
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else sides[::-1]
            t0 = time.monotonic()
            for s in order:
                res.lat[s.name] += measure_latency(conns[s.name], args.requests)
            runs: dict[str, list[StreamRun]] = {}
            for s in order:
                runs[s.name] = measure_streams(
                    conns[s.name], "/v1/completions", completion_stream_body(args.stream_tokens), args.streams
                )
                res.completion[s.name] += runs[s.name]
            chats: dict[str, list[StreamRun]] = {}
            for s in order:
                chats[s.name] = measure_streams(
                    conns[s.name], "/v1/chat/completions", chat_stream_body(args.stream_tokens), args.streams
                )
                res.chat_stream[s.name] += chats[s.name]
            for kind, got in (("completion", runs), ("chat", chats)):
                for ra, rb in zip(got[a.name], got[b.name]):
                    if ra.text != rb.text:
                        res.mismatched.append(f"{kind}: A {ra.text[:60]!r}... vs B {rb.text[:60]!r}...")
            if args.sdk:
                for s in order:
                    res.sdk[s.name] += measure_sdk(s, args.sdk)
            for s in order:
                rate, lat = asyncio.run(requests_per_second(s, args.rps_seconds, args.concurrency))
                res.rps[s.name].append(rate)
                res.rps_lat[s.name] += lat
            if rnd < len(fresh):
                first, cached = first_verification(b, fresh[rnd], args.cached_after)
                res.first_verify.append(first)
                res.cached_after.append(cached)
            print(f"  round {rnd + 1}/{args.rounds} done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    finally:
        for c in conns.values():
            c.close()
    return res


def count_tokens(res: Results, model: Path, max_tokens: int) -> None:
    """Tokens per stream: ``max_tokens`` for a length finish, else the model's own count of the text."""
    vocab = None
    for runs in (*res.completion.values(), *res.chat_stream.values()):
        for r in runs:
            if r.finish == "length":
                r.tokens = max_tokens
                continue
            if vocab is None:
                from llama_cpp import Llama

                vocab = Llama(model_path=str(model), vocab_only=True, n_ctx=0, verbose=False)
            r.tokens = len(vocab.tokenize(r.text.encode(), add_bos=False, special=False))


# -- report ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(a: Side, b: Side, res: Results, args: argparse.Namespace) -> bool:
    med: Callable[[list[float]], float] = statistics.median
    A, B = a.name, b.name
    print(f"\nmodel {demo_model_path().name}, n_threads={N_THREADS}, {args.rounds} rounds, sides alternate first")
    print(f"{'':<44}{'A median':>10}{'A p99':>9}{'B median':>10}{'B p99':>9}{'B-A / B:A':>12}")

    def row(label: str, va: list[float], vb: list[float], tail: float, unit: str, diff: bool = True) -> None:
        if not va or not vb:
            return
        ma, mb = med(va), med(vb)
        rel = f"{mb - ma:+8.2f} {unit}" if diff else f"{mb / ma:8.3f}x"
        print(f"{label:<44}{ma:10.2f}{pct(va, tail):9.2f}{mb:10.2f}{pct(vb, tail):9.2f}{rel:>12}")

    la, lb = res.lat[A], res.lat[B]
    row(f"1-token chat latency, ms (n={len(la)})", la, lb, 0.99, "ms")
    tps = {s: [r.decode_tps for r in res.completion[s]] for s in (A, B)}
    ttft = {s: [r.ttft_ms for r in res.completion[s]] for s in (A, B)}
    ctps = {s: [r.decode_tps for r in res.chat_stream[s]] for s in (A, B)}
    cttft = {s: [r.ttft_ms for r in res.chat_stream[s]] for s in (A, B)}
    chunks = {s: [r.chunk_tps for r in res.completion[s]] for s in (A, B)}
    n_tok = sorted({r.tokens for s in (A, B) for r in res.completion[s]})
    print("  (p99 columns of tok/s are p1: the slow tail)")
    row(f"stream completion decode, tok/s (n={len(tps[A])})", tps[A], tps[B], 0.01, "", diff=False)
    row("  same, text chunks/s", chunks[A], chunks[B], 0.01, "", diff=False)
    row("stream completion TTFT, ms", ttft[A], ttft[B], 0.99, "ms")
    row(f"stream chat decode, tok/s (n={len(ctps[A])})", ctps[A], ctps[B], 0.01, "", diff=False)
    row("stream chat TTFT, ms", cttft[A], cttft[B], 0.99, "ms")
    if res.sdk.get(A):
        row(f"1-token chat via openai client, ms (n={len(res.sdk[A])})", res.sdk[A], res.sdk[B], 0.99, "ms")
    ra, rb = res.rps[A], res.rps[B]
    print(
        f"{'GET /v1/models req/s, c=' + str(args.concurrency):<44}{med(ra):10.0f}{'':9}{med(rb):10.0f}{'':9}"
        f"{med(rb) / med(ra):11.3f}x"
    )
    row("  its latency under load, ms", res.rps_lat[A], res.rps_lat[B], 0.99, "ms")
    print(
        f"  (A has no API key; B authenticates every request with a cached key; per-round B: "
        f"{', '.join(f'{x:.0f}' for x in rb)})"
    )
    finish = {s: sorted({r.finish for r in res.completion[s]}) for s in (A, B)}
    print(
        f"completion streams: tokens {n_tok}, finish A {finish[A]} B {finish[B]}; "
        f"texts differing between A and B: {len(res.mismatched)}"
    )
    for m in res.mismatched[:3]:
        print(f"  {m}")
    if res.first_verify:
        cost = [f - c for f, c in zip(res.first_verify, res.cached_after)]
        print(
            f"first request with a fresh key (argon2): median {med(res.first_verify):.1f} ms, "
            f"cached {med(res.cached_after):.2f} ms -> verification costs {med(cost):.1f} ms "
            f"(min {min(cost):.1f}, max {max(cost):.1f}, n={len(cost)})"
        )

    d50, d99 = med(lb) - med(la), pct(lb, 0.99) - pct(la, 0.99)
    ratio = med(tps[B]) / med(tps[A])
    checks = [
        (f"1-token chat p50 added {d50:+.2f} ms", f"<= +{P50_TARGET_MS} ms", d50 <= P50_TARGET_MS),
        (f"1-token chat p99 added {d99:+.2f} ms", f"<= +{P99_TARGET_MS} ms", d99 <= P99_TARGET_MS),
        (f"streamed decode B/A {ratio:.3f}x", f">= {DECODE_TARGET:.2f}x", ratio >= DECODE_TARGET),
    ]
    print()
    for text, target, ok in checks:
        print(f"{text:<44} target {target:<12} {verdict(ok)}")
    return all(ok for _, _, ok in checks)


@contextmanager
def py_spy(out_dir: Path | None, targets: dict[str, int]) -> Iterator[None]:
    if out_dir is None:
        yield
        return
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "500",
                "--format",
                "speedscope",
                "-o",
                str(out_dir / f"{name}.speedscope.json"),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        for name, pid in targets.items()
    ]
    time.sleep(1.0)
    try:
        yield
    finally:
        for p in procs:
            p.send_signal(2)
        for p in procs:
            p.wait(60)
        print(f"py-spy profiles in {out_dir}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, sides alternating first (default 5)")
    parser.add_argument("--requests", type=int, default=100, help="1-token chats per side and round (100)")
    parser.add_argument("--streams", type=int, default=2, help="streams of each kind per side and round (2)")
    parser.add_argument("--stream-tokens", type=int, default=128, help="max_tokens of a stream (128)")
    parser.add_argument("--sdk", type=int, default=20, help="openai-client chats per side and round, 0: skip")
    parser.add_argument("--concurrency", type=int, default=8, help="connections for GET /v1/models (8)")
    parser.add_argument("--rps-seconds", type=float, default=1.5, help="seconds per side and round (1.5)")
    parser.add_argument("--cached-after", type=int, default=30, help="cached requests after a fresh key (30)")
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="record proxy and daemon with py-spy into DIR")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 2 or args.streams < 1 or args.stream_tokens < 2:
        parser.error("--rounds, --streams >= 1; --requests, --stream-tokens >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        sys.exit(
            f"llama-cpp-python's server extras are missing ({exc}): "
            ".venv/bin/pip install 'llama-cpp-python[server]==0.3.36'"
        )
    model = demo_model_path()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llms-bp-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        a = start_llama_server(stack, tmp, model)
        b, fresh = start_stack(stack, tmp, model, args.rounds)
        print(
            f"A pid {a.pid} port {a.port}; B proxy pid {b.pid} port {b.port}, daemon pid "
            f"{b.extra_pids['daemon']}; up in {time.monotonic() - t0:.1f} s",
            file=sys.stderr,
        )
        with py_spy(args.py_spy, {"proxy": b.pid, **b.extra_pids}):
            res = run_rounds(a, b, fresh, args)
    count_tokens(res, model, args.stream_tokens)
    ok = report(a, b, res, args)
    print(f"\ntotal {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
