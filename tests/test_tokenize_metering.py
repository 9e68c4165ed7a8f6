"""Issue 18: ``/extras/tokenize`` was free, unlimited, unrecorded and ran on the daemon's main thread.

Now it is admitted and recorded by the metering owner like every request, bounded in size, and the
daemon tokenizes in a pool of its own, so a flood cannot stop the pings that its health check and
the systemd watchdog depend on (real daemon, real model, real ZeroMQ).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable

import httpx2 as httpx

from proxy.metering.tokens import count_text
from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeRequestError
from runtime.api.protocol import SamplingParams
from tests.harness import Daemon, Proxy, demo_spec

TEXT = "Hello, world! Tokenize me, please."


def _post(proxy: Proxy, key: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{proxy.port}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _rows(proxy: Proxy, name: str) -> list[tuple[object, ...]]:
    return proxy.query(
        "SELECT e.endpoint, e.status, e.prompt_tokens, e.completion_tokens, e.runtime_prompt_tokens "
        "FROM token_usage_events e JOIN api_keys k ON k.id = e.api_key_id WHERE k.name = ? ORDER BY e.id",
        (name,),
    )


def test_a_key_with_no_quota_and_rpm_1_cannot_tokenize(proxy: Proxy) -> None:
    """Old code: answered 20 of 20 times, with no ledger row."""
    key = proxy.make_key("tokenize-spent", token_limit=0, rpm_limit=1)
    answers = [_post(proxy, key, "/extras/tokenize", {"model": "smollm2", "input": TEXT}) for _ in range(20)]
    codes = [a.json()["error"]["code"] for a in answers if a.status_code == 429]
    assert len(codes) == 20, [a.status_code for a in answers]
    assert codes[0] == "insufficient_quota" and set(codes[1:]) == {"rate_limit_exceeded"}
    assert _rows(proxy, "tokenize-spent") == [("/extras/tokenize", 429, 0, 0, None)] * 20


def test_tokenize_is_billed_like_an_embedding_and_detokenize_like_text(proxy: Proxy) -> None:
    key = proxy.make_key("tokenize-billed", token_limit=10_000)
    tokens = _post(proxy, key, "/extras/tokenize", {"model": "smollm2", "input": TEXT}).json()["tokens"]
    count = _post(proxy, key, "/extras/tokenize/count", {"model": "smollm2", "input": TEXT}).json()["count"]
    text = _post(proxy, key, "/extras/detokenize", {"model": "smollm2", "tokens": tokens}).json()["text"]
    assert count == len(tokens) and text.strip() == TEXT
    billed = count_text(TEXT)
    assert _rows(proxy, "tokenize-billed") == [
        ("/extras/tokenize", 200, billed, 0, len(tokens)),
        ("/extras/tokenize/count", 200, billed, 0, len(tokens)),
        ("/extras/detokenize", 200, 0, count_text(text), 0),
    ]
    [(used, reserved)] = proxy.query("SELECT tokens_used, tokens_reserved FROM api_keys WHERE name = 'tokenize-billed'")
    assert (used, reserved) == (2 * billed + count_text(text), 0)


def test_tokenize_inputs_are_bounded(proxy: Proxy) -> None:
    key = proxy.make_key("tokenize-bounded")
    big = _post(proxy, key, "/extras/tokenize", {"model": "smollm2", "input": "x" * 300_000})
    assert big.status_code == 413 and big.json()["error"]["code"] == "input_too_large"
    many = _post(proxy, key, "/extras/detokenize", {"model": "smollm2", "tokens": [1] * 70_000})
    assert many.status_code == 413 and many.json()["error"]["param"] == "tokens"


async def _flood(endpoint: str, seconds: float, text: str) -> tuple[int, int]:
    """Tokenize ``text`` over and over for ``seconds``: (answered, refused busy)."""
    answered = busy = 0
    async with RuntimeClient(endpoint, timeout=60) as client:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                await client.tokenize("smollm2", text)
                answered += 1
            except RuntimeRequestError as exc:
                assert exc.code == "busy", exc
                busy += 1
                await asyncio.sleep(0.05)
    return answered, busy


async def _pings(endpoint: str, stop: Callable[[], bool]) -> list[float]:
    """A watchdog's view: a ping every 0.2 s on a connection of its own; each answer's latency."""
    latencies = []
    async with RuntimeClient(endpoint, timeout=60) as client:
        while not stop():
            start = time.monotonic()
            await client.ping(timeout=60)
            latencies.append(time.monotonic() - start)
            await asyncio.sleep(0.2)
    return latencies


async def _chats(endpoint: str, stop: Callable[[], bool]) -> list[float]:
    """A good client: 2-token generations, one after the other; each one's latency."""
    latencies = []
    async with RuntimeClient(endpoint, timeout=120) as client:
        while not stop():
            start = time.monotonic()
            stream = client.generate("smollm2", prompt="Hi", params=SamplingParams(max_tokens=2), timeout=120)
            async for _ in stream:
                pass
            latencies.append(time.monotonic() - start)
    return latencies


async def _measure(endpoint: str, seconds: float, clients: int, text: str) -> tuple[list[float], list[float], int]:
    done = asyncio.Event()
    pings = asyncio.create_task(_pings(endpoint, done.is_set))
    chats = asyncio.create_task(_chats(endpoint, done.is_set))
    floods = await asyncio.gather(*(_flood(endpoint, seconds, text) for _ in range(clients)))
    done.set()
    return await pings, await chats, sum(answered for answered, _ in floods)


def test_a_tokenize_flood_leaves_the_daemon_answering_pings_and_chats(make_daemon: Callable[..., Daemon]) -> None:
    """Old code: four clients for 80 s stopped the watchdog pings for 107 s; 2-token chats took 15-32 s.
    Here four clients send 1 MB each (about 2 s of llama.cpp's tokenizer) for 15 s."""
    daemon = make_daemon("--model", demo_spec(n_threads=1)).start()
    pings, chats, answered = asyncio.run(_measure(daemon.endpoint, 15.0, 4, "x" * 1_000_000))
    worst_ping, worst_chat = max(pings), max(chats, default=float("inf"))
    print(
        f"METER tokenize flood (4 clients x 1 MB, 15 s): {answered} tokenized; pings {len(pings)}, "
        f"median {statistics.median(pings) * 1000:.0f} ms, worst {worst_ping * 1000:.0f} ms; "
        f"2-token chats {len(chats)}, median {statistics.median(chats) if chats else 0:.2f} s, worst {worst_chat:.2f} s"
    )
    assert answered > 0
    assert worst_ping < 1.0, f"a ping waited {worst_ping:.1f} s"
    assert chats and worst_chat < 10.0, f"chats: {chats}"


def test_tokenize_calls_beyond_the_backlog_are_refused_busy_at_once(make_daemon: Callable[..., Daemon]) -> None:
    """Past the pool's backlog a call is refused with ``busy`` (the proxy's 503) instead of queueing without bound."""
    daemon = make_daemon("--model", demo_spec(n_threads=1)).start()

    async def burst() -> list[object]:
        async with RuntimeClient(daemon.endpoint, timeout=120) as client:
            calls = [client.tokenize("smollm2", "x" * 200_000) for _ in range(40)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    refused = [r for r in results if isinstance(r, RuntimeRequestError)]
    assert refused and all(r.code == "busy" for r in refused), results[:3]
    assert any(isinstance(r, list) for r in results)
