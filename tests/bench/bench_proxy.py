"""What our stack (proxy + runtime daemon) costs over llama-cpp-python's own OpenAI server, in one run.

Run on demand (pytest never collects it)::

    .venv/bin/pip install 'llama-cpp-python[server]==0.3.36'   # the peer server's extras
    .venv/bin/python tests/bench/bench_proxy.py [--rounds N] [--requests N] [--streams N] [--rps-seconds S]

Both sides serve the demo GGUF (``runtime.backends.demo.demo_model_path()``) with ``n_threads=2`` and the
default ``n_ctx=2048``, and both get byte-identical request bodies (our proxy ignores the sampling
fields it does not know; they pin llama-cpp-python's defaults to the daemon's: ``top_k=40``,
``repeat_penalty=1.0``), greedy (``temperature=0``):

(A) ``python -m llama_cpp.server --model PATH --model_alias smollm2 --n_threads 2`` (uvicorn,
    FastAPI, no API key: the configuration measured in ``platform-notes.md``);
(B) ``python -m llmserver.commands.runtime`` on an ``ipc://`` endpoint in a temporary directory plus
    ``python -m llmserver.commands.proxy`` on loopback with its own SQLite file and a real API key (default argon2
    profile), i.e. auth, token counting, the ZeroMQ hop and the usage-ledger commit per request.

Both sets of servers are up for the whole run but only one side is driven at a time: the other sits
idle with its model loaded. Measurements go in rounds; every round measures each thing on both sides,
and which side goes first alternates between rounds, so drift and noise hit both. Each block starts
with a discarded request (it re-primes the KV cache: both servers reuse the common prompt prefix, so a
repeated request evaluates one prompt token).

1. 1-token chat completion (``max_tokens=1``), sequential, one keep-alive ``http.client`` connection:
   client-side latency from sending to the last body byte. B - A is what our stack adds. The same
   prompt again is an exact KV-cache hit, which llama-cpp-python (0.3.36) serves by sampling the
   cached logits without any decode, on both sides: this measures the servers' own work (HTTP,
   validation, chat template + tokenization, sampling; for B also auth, token counting, the ZeroMQ
   hop and the ledger commit), not the model. The CPU time each side's processes spend per request
   is printed below it.
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
differences between A and B are what the targets judge. Other processes on the machine are detected
(see :class:`CpuWatch`): samples taken under foreign load are set aside, and the run stops after
``--max-seconds`` whatever the load. Under sustained foreign load (about one core busy elsewhere)
llama.cpp with ``n_threads=2`` on two cores stalls for seconds between tokens on both sides; such
streams are abandoned after ``--stream-timeout``. Pass ``--py-spy DIR`` to record the proxy and the
daemon with py-spy during the run (it perturbs the numbers; for finding where time goes only).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import math
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

from proxy.auth.apikey import key_minter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runtime.backends.demo import demo_model_path  # noqa: E402

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

    def processes(self) -> dict[str, int]:
        main = "proxy" if self.extra_pids else "server"
        return {main: self.pid, **self.extra_pids}

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
    from proxy.storage.api_keys import KeyRepository
    from proxy.storage.database import Database

    async def create() -> list[str]:
        async with Database.open(db_path) as db:
            repo = KeyRepository(db, key_minter())
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
            [sys.executable, "-m", "llmserver.commands.runtime", "--endpoint", endpoint, "--model", spec],
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
    proxy = stack.enter_context(process("proxy", [sys.executable, "-m", "llmserver.commands.proxy"], penv, plog))
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

    def post(self, path: str, body: dict[str, Any], busy_wait: float = 0.0) -> tuple[float, dict[str, Any]]:
        """One request; its latency (ms) and body. A 503 (the model's queue still holds streams this
        client abandoned) is retried for up to ``busy_wait`` seconds."""
        data = json.dumps(body).encode()
        headers = self.side.headers()
        perf = time.perf_counter
        give_up = perf() + busy_wait
        while True:
            started = perf()
            self.http.request("POST", path, data, headers)
            resp = self.http.getresponse()
            raw = resp.read()
            elapsed = (perf() - started) * 1000
            if resp.status == 503 and perf() < give_up:
                time.sleep(0.5)
                continue
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

    def stream(self, path: str, body: dict[str, Any], limit: float, stall: float) -> StreamRun:
        """One streamed request. It is abandoned (connection closed; both servers then stop generating)
        after ``limit`` seconds, or when nothing arrives for ``stall`` seconds: a token takes ~10 ms, a
        longer silence is foreign load stalling llama.cpp's threads."""
        data = json.dumps(body).encode()
        perf = time.perf_counter
        started = perf()
        self.http.request("POST", path, data, self.side.headers())
        resp = self.http.getresponse()
        if resp.status == 503:  # busy: the queue still holds streams abandoned earlier (see STALLED)
            resp.read()
            return StreamRun(started, [perf()], "", "busy")
        if resp.status != 200:
            raise RuntimeError(f"{self.side.name} {path}: HTTP {resp.status} {resp.read()[:300]!r}")
        if self.http.sock is not None:
            self.http.sock.settimeout(stall)
        stamps: list[float] = []
        pieces: list[str] = []
        finish = None
        while True:
            try:
                line = resp.readline()
            except TimeoutError:
                line = b""
                finish = "abandoned"
            now = perf()
            if finish == "abandoned" or now - started > limit:
                self.http.close()
                finish = "abandoned"
                break
            if not line:
                break
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
        if finish != "abandoned":
            resp.read()  # the end of the chunked body, so the connection can be reused
            if self.http.sock is not None:
                self.http.sock.settimeout(120)
        if not stamps:
            if finish != "abandoned":
                raise RuntimeError(f"{self.side.name} {path}: no text streamed")
            stamps.append(perf())
        return StreamRun(started, stamps, "".join(pieces), finish or "?")

    def reopen(self) -> None:
        """A new connection at the start of a block: uvicorn closes one idle for 5 s (while the other
        side was being measured); the block's warm-up request pays the connect."""
        self.http.close()

    def close(self) -> None:
        self.http.close()


# How a stream ends when foreign load stalled it: abandoned by this client, or refused as busy because
# the server still works on streams abandoned before (our proxy notices a client that went away only
# when it writes the next token, so a stalled generation keeps its queue slot until it makes progress).
STALLED = ("abandoned", "busy")


@dataclass
class StreamRun:
    started: float
    stamps: list[float]
    text: str
    finish: str
    tokens: int = 0
    noise: float = 0.0  # foreign CPU load (cores) during the stream

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


class CpuWatch:
    """CPU time the machine spent on anything but this benchmark (its client and its servers).

    The two cores are shared with whatever else runs (test suites, other benchmarks). llama.cpp's
    threads spin-wait for each other, so a foreign process that takes a core can stall a token for
    seconds; such samples measure the neighbours, not the servers. Each sample is tagged with the
    foreign load during it (in cores, from ``/proc/stat`` minus the benchmark's own processes), the
    verdicts use the quiet samples, and every block first waits (briefly) for a quiet moment.
    """

    def __init__(self, pids: list[int], limit: float, wait: float, budget: float) -> None:
        self.pids, self.limit, self.wait, self.budget = pids, limit, wait, budget
        self.tick = os.sysconf("SC_CLK_TCK")
        self.waited = 0.0

    def snap(self) -> tuple[float, int]:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        ours = sum(_ticks(pid) for pid in self.pids)
        return time.perf_counter(), user + nice + system + irq + softirq + steal - ours

    def cpu_ms(self, pid: int) -> float:
        """CPU time (user + system, all threads) of ``pid`` so far, in ms."""
        return _ticks(pid) * 1000 / self.tick

    def foreign(self, since: tuple[float, int]) -> float:
        now = self.snap()
        span = now[0] - since[0]
        return max(0.0, (now[1] - since[1]) / self.tick / span) if span > 0 else 0.0

    def budget_left(self) -> float:
        return self.budget - self.waited

    def wait_quiet(self) -> None:
        end = time.perf_counter() + min(self.wait, max(0.0, self.budget - self.waited))
        started = time.perf_counter()
        while True:
            s0 = self.snap()
            time.sleep(0.3)
            if self.foreign(s0) <= self.limit or time.perf_counter() >= end:
                break
        self.waited += time.perf_counter() - started - 0.3


def _ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Samples:
    """Values, each with the foreign load (cores) measured while it was taken."""

    values: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)

    def add(self, values: list[float], noise: float) -> None:
        self.values += values
        self.noise += [noise] * len(values)

    def quiet(self, limit: float) -> list[float]:
        return [v for v, n in zip(self.values, self.noise, strict=True) if n <= limit]


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
    warm_until = time.perf_counter() + 0.2
    await asyncio.gather(*(_raw_worker(side.port, request, warm_until, []) for _ in range(concurrency)))
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(_raw_worker(side.port, request, started + seconds, lat) for _ in range(concurrency))
    )
    return sum(counts) / (time.perf_counter() - started), lat


# -- measurements ------------------------------------------------------------------------------


@dataclass
class SideResults:
    lat: Samples = field(default_factory=Samples)
    sdk: Samples = field(default_factory=Samples)
    completion: list[StreamRun] = field(default_factory=list)
    chat: list[StreamRun] = field(default_factory=list)
    rps: Samples = field(default_factory=Samples)
    rps_lat: Samples = field(default_factory=Samples)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # process -> CPU ms spent in 1-token chats
    cpu_requests: int = 0
    abandoned: int = 0  # stream attempts abandoned (stalled), retried or not


@dataclass
class Results:
    sides: dict[str, SideResults]
    first_verify: Samples = field(default_factory=Samples)
    verify_cost: Samples = field(default_factory=Samples)
    cached: list[float] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def one_token_body() -> dict[str, Any]:
    return {"model": MODEL, "messages": CHAT_MESSAGES, "max_tokens": 1, **SAMPLING}


def completion_stream_body(tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "prompt": COUNTING_PROMPT, "max_tokens": tokens, "stream": True, **SAMPLING}


def chat_stream_body(tokens: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": STORY_MESSAGES, "max_tokens": tokens, "stream": True, **SAMPLING}


def measure_latency(conn: Conn, n: int, cpu: CpuWatch, out: SideResults, group: int = 50) -> None:
    """``n`` sequential 1-token chats. Foreign load is measured per ``group`` requests (~0.1 s: with
    10 ms clock ticks a shorter window would call one stray tick of a kernel thread noise)."""
    body = one_token_body()
    conn.reopen()
    conn.post("/v1/chat/completions", body, busy_wait=60.0)  # re-prime the KV cache
    procs = conn.side.processes()
    before = {name: cpu.cpu_ms(pid) for name, pid in procs.items()}
    gc.disable()
    try:
        for start in range(0, n, group):
            s0 = cpu.snap()
            values = [conn.post("/v1/chat/completions", body)[0] for _ in range(min(group, n - start))]
            out.lat.add(values, cpu.foreign(s0))
    finally:
        gc.enable()
    for name, pid in procs.items():
        out.cpu_ms[name] = out.cpu_ms.get(name, 0.0) + cpu.cpu_ms(pid) - before[name]
    out.cpu_requests += n


def measure_streams(
    conn: Conn, path: str, body: dict[str, Any], n: int, cpu: CpuWatch, args: argparse.Namespace
) -> tuple[list[StreamRun], int]:
    """``n`` streams; one abandoned under foreign load is retried (after a wait for quiet) up to
    ``--stream-retries`` times. The runs, and how many attempts were abandoned."""

    def attempt(b: dict[str, Any]) -> StreamRun:
        return conn.stream(path, b, args.stream_timeout, args.stall_timeout)

    conn.reopen()
    attempt(dict(body, max_tokens=2))  # re-prime the KV cache
    runs, abandoned = [], 0
    for _ in range(n):
        for tries_left in range(args.stream_retries, -1, -1):
            s0 = cpu.snap()
            run = attempt(body)
            run.noise = cpu.foreign(s0)
            if run.finish not in STALLED:
                break
            abandoned += 1
            run.noise = math.inf  # whatever it measured, it was stalled
            if not tries_left or cpu.budget_left() <= 0:
                break
            cpu.wait_quiet()
            time.sleep(1.0)  # let the server notice the abandoned stream
            conn.reopen()
            attempt(dict(body, max_tokens=2))
        runs.append(run)
    return runs, abandoned


def measure_sdk(side: Side, n: int, cpu: CpuWatch, out: Samples) -> None:
    import openai

    client = openai.OpenAI(base_url=f"http://{HOST}:{side.port}/v1", api_key=side.key or "none", max_retries=0)
    extra = {k: v for k, v in SAMPLING.items() if k not in ("temperature", "top_p")}

    def once() -> float:
        t0 = time.perf_counter()
        client.chat.completions.create(
            model=MODEL,
            messages=CHAT_MESSAGES,  # type: ignore[arg-type]
            max_tokens=1,
            temperature=0,
            top_p=0.95,
            extra_body=extra,
        )
        return (time.perf_counter() - t0) * 1000

    try:
        warm = Conn(side)  # wait out a queue still busy with abandoned streams, without the SDK
        warm.post("/v1/chat/completions", one_token_body(), busy_wait=60.0)
        warm.close()
        once()  # connect, re-prime the KV cache
        s0 = cpu.snap()
        values = [once() for _ in range(n)]
        out.add(values, cpu.foreign(s0))
    finally:
        client.close()


def first_verification(b: Side, key: str, cached_n: int, cpu: CpuWatch, res: Results) -> None:
    conn = Conn(b)
    try:
        conn.get("/v1/models")  # open the connection with the known key
        s0 = cpu.snap()
        first = conn.get("/v1/models", key)
        noise = cpu.foreign(s0)
        cached = statistics.median(conn.get("/v1/models", key) for _ in range(cached_n))
    finally:
        conn.close()
    res.first_verify.add([first], noise)
    res.verify_cost.add([first - cached], noise)
    res.cached.append(cached)


def run_rounds(a: Side, b: Side, fresh: list[str], args: argparse.Namespace, cpu: CpuWatch) -> Results:
    """Every measurement on both sides, round after round, until ``--rounds`` or ``--max-seconds``."""
    sides = (a, b)
    res = Results({s.name: SideResults() for s in sides})
    conns = {s.name: Conn(s) for s in sides}
    deadline = time.monotonic() + args.max_seconds

    def latency(s: Side, rnd: int) -> None:
        measure_latency(conns[s.name], args.requests, cpu, res.sides[s.name])

    def streams(kind: str, path: str, body: dict[str, Any]) -> Callable[[Side, int], None]:
        def run(s: Side, rnd: int) -> None:
            got, abandoned = measure_streams(conns[s.name], path, body, args.streams, cpu, args)
            getattr(res.sides[s.name], kind).extend(got)
            res.sides[s.name].abandoned += abandoned

        return run

    def sdk(s: Side, rnd: int) -> None:
        measure_sdk(s, args.sdk, cpu, res.sides[s.name].sdk)

    def rps(s: Side, rnd: int) -> None:
        s0 = cpu.snap()
        rate, lat = asyncio.run(requests_per_second(s, args.rps_seconds, args.concurrency))
        noise = cpu.foreign(s0)
        res.sides[s.name].rps.add([rate], noise)
        res.sides[s.name].rps_lat.add(lat, noise)

    def fresh_key(s: Side, rnd: int) -> None:
        if s is b and rnd < len(fresh):
            first_verification(b, fresh[rnd], args.cached_after, cpu, res)

    steps = [
        latency,
        streams("completion", "/v1/completions", completion_stream_body(args.stream_tokens)),
        streams("chat", "/v1/chat/completions", chat_stream_body(args.stream_tokens)),
        *([sdk] if args.sdk else []),
        rps,
        fresh_key,
    ]
    try:
        for rnd in range(args.rounds):
            order = sides if rnd % 2 == 0 else sides[::-1]
            t0 = time.monotonic()
            for step in steps:
                if time.monotonic() > deadline:
                    break
                for s in order:  # always both sides, so every measurement stays paired
                    cpu.wait_quiet()
                    step(s, rnd)
            else:
                print(
                    f"  round {rnd + 1}/{args.rounds} done in {time.monotonic() - t0:.1f} s "
                    f"(waited for quiet {cpu.waited:.1f} s so far)",
                    file=sys.stderr,
                )
                continue
            print(f"  --max-seconds reached: stopped in round {rnd + 1}", file=sys.stderr)
            break
    finally:
        for c in conns.values():
            c.close()
    for kind in ("completion", "chat"):
        runs_a, runs_b = getattr(res.sides[a.name], kind), getattr(res.sides[b.name], kind)
        for ra, rb in zip(runs_a, runs_b, strict=True):
            if ra.text != rb.text and ra.finish not in STALLED and rb.finish not in STALLED:
                res.mismatched.append(f"{kind}: A {ra.text[:50]!r}... B {rb.text[:50]!r}...")
    return res


def count_tokens(res: Results, model: Path, max_tokens: int) -> None:
    """Tokens per stream: ``max_tokens`` for a length finish, else the model's own count of the text."""
    vocab = None
    for side in res.sides.values():
        for r in (*side.completion, *side.chat):
            if r.finish == "length":
                r.tokens = max_tokens
                continue
            if vocab is None:
                from llama_cpp import Llama

                saved = os.dup(2)  # llama.cpp warns about the vocab-only context on fd 2
                try:
                    with open(os.devnull, "wb") as null:
                        os.dup2(null.fileno(), 2)
                        vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
            r.tokens = len(vocab.tokenize(r.text.encode(), add_bos=False, special=False))


# -- report ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(a: Side, b: Side, res: Results, args: argparse.Namespace) -> bool:
    med: Callable[[list[float]], float] = statistics.median
    A, B = res.sides[a.name], res.sides[b.name]
    limit = args.noise_limit
    rounds = len(A.rps.values)
    print(
        f"\nmodel {demo_model_path().name}, n_threads={N_THREADS}, {rounds} complete round(s), sides "
        f"alternating first; A = llama_cpp.server, B = our proxy + daemon.\nColumns use the quiet samples "
        f"(foreign load <= {limit} cores; * = none quiet on a side, all samples); 'all' rows include the noisy."
    )
    print(f"{'':<40}{'A median':>9}{'A p99':>9}{'B median':>9}{'B p99':>9}{'B-A|B/A':>10}{'quiet A B':>16}")

    def line(label: str, va: list[float], vb: list[float], tail: float, ratio: bool, unit: str, note: str) -> None:
        ma, mb = med(va), med(vb)
        rel = f"{mb / ma:.3f}x" if ratio else f"{mb - ma:+.2f}{unit}"
        print(f"{label:<40}{ma:9.2f}{pct(va, tail):9.2f}{mb:9.2f}{pct(vb, tail):9.2f}{rel:>10}{note:>16}")

    def row(
        label: str, sa: Samples, sb: Samples, unit: str, tail: float = 0.99, ratio: bool = False, both: bool = False
    ) -> None:
        if not sa.values or not sb.values:
            return
        qa, qb = sa.quiet(limit), sb.quiet(limit)
        counts = f"{len(qa)}/{len(sa.values)} {len(qb)}/{len(sb.values)}"
        if not qa or not qb:
            qa, qb, counts = sa.values, sb.values, "*" + counts
        line(label, qa, qb, tail, ratio, unit, counts)
        if both:
            line("  all samples", sa.values, sb.values, tail, ratio, unit, "")

    def runs(side: SideResults, kind: str, attr: str) -> Samples:
        out = Samples()
        for r in getattr(side, kind):
            out.add([getattr(r, attr)], r.noise)
        return out

    row("1-token chat latency, ms", A.lat, B.lat, "ms", both=True)
    for label, side in (("A", A), ("B", B)):
        if side.cpu_requests:
            parts = [f"{name} {ms / side.cpu_requests:.2f}" for name, ms in side.cpu_ms.items()]
            total = sum(side.cpu_ms.values()) / side.cpu_requests
            more = f" (total {total:.2f})" if len(parts) > 1 else ""
            print(f"  {label} server CPU per 1-token chat, ms: {', '.join(parts)}{more}")
    print("(tok/s rows: the p99 columns show p1, the slow tail)")
    row("stream completion decode, tok/s", *(runs(x, "completion", "decode_tps") for x in (A, B)), "", 0.01, True, True)
    row("  text chunks/s", *(runs(x, "completion", "chunk_tps") for x in (A, B)), "", 0.01, True)
    row("  time to first token, ms", *(runs(x, "completion", "ttft_ms") for x in (A, B)), "ms")
    row("stream chat decode, tok/s", *(runs(x, "chat", "decode_tps") for x in (A, B)), "", 0.01, True)
    row("  time to first token, ms", *(runs(x, "chat", "ttft_ms") for x in (A, B)), "ms")
    row("1-token chat via openai client, ms", A.sdk, B.sdk, "ms")
    row(f"GET /v1/models req/s, {args.concurrency} conns", A.rps, B.rps, "", 0.01, True)
    row("  latency under that load, ms", A.rps_lat, B.rps_lat, "ms")
    if A.rps.values:
        print("  (A: no API key; B: every request authenticated with a cached key)")
    streams = [r for x in (A, B) for r in (*x.completion, *x.chat)]
    if streams:
        tokens = sorted({r.tokens for x in (A, B) for r in x.completion})
        finish = {n: sorted({r.finish for r in x.completion}) for n, x in (("A", A), ("B", B))}
        print(
            f"completion streams: tokens {tokens}, finish A {finish['A']} B {finish['B']}; stalled attempts "
            f"abandoned A {A.abandoned} B {B.abandoned}; streams whose text differs A/B: {len(res.mismatched)}"
        )
    for m in res.mismatched[:3]:
        print(f"  {m}")
    if res.verify_cost.values:
        cost = res.verify_cost.quiet(limit) or res.verify_cost.values
        print(
            f"fresh key, first request (argon2id verify): median {med(res.first_verify.values):.1f} ms; "
            f"minus the cached median ({med(res.cached):.2f} ms) = {med(cost):.1f} ms "
            f"(min {min(cost):.1f}, max {max(cost):.1f}, quiet n={len(cost)}/{len(res.verify_cost.values)})"
        )

    def pick(sa: Samples, sb: Samples, need: int) -> tuple[list[float], list[float], str]:
        qa, qb = sa.quiet(limit), sb.quiet(limit)
        if len(qa) >= need and len(qb) >= need:
            return qa, qb, ""
        return sa.values, sb.values, " (noisy)"

    checks: list[tuple[str, str, bool | None]] = []
    need = max(20, len(A.lat.values) // 4)
    la, lb, note = pick(A.lat, B.lat, need)
    if la and lb:
        d50, d99 = med(lb) - med(la), pct(lb, 0.99) - pct(la, 0.99)
        checks.append((f"1-token chat p50 added {d50:+.2f} ms{note}", f"<= +{P50_TARGET_MS} ms", d50 <= P50_TARGET_MS))
        checks.append((f"1-token chat p99 added {d99:+.2f} ms{note}", f"<= +{P99_TARGET_MS} ms", d99 <= P99_TARGET_MS))
    else:
        checks += [("1-token chat p50 added", f"<= +{P50_TARGET_MS} ms", None)]
        checks += [("1-token chat p99 added", f"<= +{P99_TARGET_MS} ms", None)]
    ta, tb, note = pick(runs(A, "completion", "decode_tps"), runs(B, "completion", "decode_tps"), 3)
    if ta and tb:
        ratio = med(tb) / med(ta)
        checks.append((f"streamed decode B/A {ratio:.3f}x{note}", f">= {DECODE_TARGET:.2f}x", ratio >= DECODE_TARGET))
    else:
        checks.append(("streamed decode B/A", f">= {DECODE_TARGET:.2f}x", None))
    print(f"\nforeign CPU load: waited {args.cpu.waited:.1f} s for quiet moments")
    for text, target, ok in checks:
        print(f"{text:<46} target {target:<12} {'NO DATA' if ok is None else verdict(ok)}")
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
            ],
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
    parser.add_argument("--requests", type=int, default=200, help="1-token chats per side and round (200)")
    parser.add_argument("--streams", type=int, default=2, help="streams of each kind per side and round (2)")
    parser.add_argument("--stream-tokens", type=int, default=128, help="max_tokens of a stream (128)")
    parser.add_argument("--sdk", type=int, default=20, help="openai-client chats per side and round, 0: skip")
    parser.add_argument(
        "--stream-timeout", type=float, default=15.0, help="abandon a stream after this many seconds (15)"
    )
    parser.add_argument("--stall-timeout", type=float, default=1.0, help="abandon a stream silent this long, s (1)")
    parser.add_argument(
        "--stream-retries", type=int, default=2, help="retries of an abandoned stream, after a quiet wait (2)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=270.0, help="stop measuring after this long, rounds or not (270)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="connections for GET /v1/models (8)")
    parser.add_argument("--rps-seconds", type=float, default=1.5, help="seconds per side and round (1.5)")
    parser.add_argument("--cached-after", type=int, default=30, help="cached requests after a fresh key (30)")
    parser.add_argument(
        "--noise-limit", type=float, default=0.2, help="foreign load (cores) above which a sample is noisy (0.2)"
    )
    parser.add_argument("--quiet-wait", type=float, default=3.0, help="max wait for quiet per block, s (3)")
    parser.add_argument("--quiet-budget", type=float, default=60.0, help="max total wait for quiet, s (60)")
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
        pids = [os.getpid(), a.pid, b.pid, *b.extra_pids.values()]
        args.cpu = CpuWatch(pids, args.noise_limit, args.quiet_wait, args.quiet_budget)
        with py_spy(args.py_spy, {"proxy": b.pid, **b.extra_pids}):
            res = run_rounds(a, b, fresh, args, args.cpu)
    count_tokens(res, model, args.stream_tokens)
    ok = report(a, b, res, args)
    print(f"\ntotal {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
