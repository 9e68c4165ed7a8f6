"""The runtime daemon for real: subprocess, ZeroMQ over ipc://, the SmolLM2 model (issue 2)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeRequestError, RuntimeUnavailableError
from runtime.api.models import ModelConfig
from runtime.api.protocol import SamplingParams
from runtime.backends.demo import demo_model_path
from tests.harness import Daemon, demo_spec

pytestmark = pytest.mark.asyncio

HELLO = [{"role": "user", "content": "What is the capital of France?"}]
LONG = SamplingParams(max_tokens=2000, temperature=0.0, ignore_eos=True)


async def collect(client: RuntimeClient, **kw: object) -> tuple[list[str], object]:
    pieces: list[str] = []
    async with client.generate("smollm2", **kw) as stream:  # type: ignore[arg-type]
        async for text in stream:
            pieces.append(text)
    return pieces, stream.done


async def test_streams_a_real_answer_with_exact_counts(shared_daemon: Daemon) -> None:
    async with RuntimeClient(shared_daemon.endpoint) as client:
        pieces, done = await collect(
            client, messages=HELLO, params=SamplingParams(max_tokens=48, temperature=0.2, seed=1)
        )
    text = "".join(pieces)
    assert "Paris" in text
    assert len(pieces) >= 2, "the answer should arrive as a stream of deltas"
    assert done is not None
    assert done.finish_reason in ("stop", "length")
    assert done.prompt_tokens == 37  # what llama-cpp-python's own chat completion counts for HELLO
    assert 1 <= done.completion_tokens <= 48
    assert done.finish_reason == "stop" or done.completion_tokens == 48
    assert done.perf.decode_tps > 0 and done.perf.prefill_ms > 0


async def test_max_tokens_and_stop_strings(shared_daemon: Daemon) -> None:
    async with RuntimeClient(shared_daemon.endpoint) as client:
        _, done = await collect(client, prompt="1, 2, 3, 4,", params=SamplingParams(max_tokens=5, temperature=0))
        assert done.finish_reason == "length" and done.completion_tokens == 5
        pieces, done = await collect(
            client, prompt="1, 2, 3, 4,", params=SamplingParams(max_tokens=40, temperature=0, stop=(" 7",))
        )
    assert done.finish_reason == "stop"
    assert "".join(pieces).strip().startswith("5, 6,") and "7" not in "".join(pieces)


async def test_seed_makes_sampling_repeatable(shared_daemon: Daemon) -> None:
    params = SamplingParams(max_tokens=20, temperature=1.0, seed=1234)
    async with RuntimeClient(shared_daemon.endpoint) as client:
        a, _ = await collect(client, messages=HELLO, params=params)
        b, _ = await collect(client, messages=HELLO, params=params)
    assert "".join(a) == "".join(b)


async def test_concurrent_requests_to_one_model_are_served_in_order(shared_daemon: Daemon) -> None:
    finished: list[int] = []
    params = SamplingParams(max_tokens=15, temperature=0.0, ignore_eos=True)

    async def one(i: int, client: RuntimeClient) -> int:
        async with client.generate("smollm2", messages=HELLO, params=params) as stream:
            async for _ in stream:
                pass
        finished.append(i)
        assert stream.position is not None
        return stream.position

    async with RuntimeClient(shared_daemon.endpoint) as client:
        tasks = []
        for i in range(3):
            tasks.append(asyncio.create_task(one(i, client)))
            await asyncio.sleep(0.02)  # submission order is the order of these sends
        positions = await asyncio.gather(*tasks)
    assert positions == [0, 1, 2]
    assert finished == [0, 1, 2]


async def test_busy_at_once_when_the_queue_is_full(make_daemon: type[Daemon]) -> None:
    daemon = make_daemon("--model", demo_spec(n_threads=2), queue_depth=1).start()
    async with RuntimeClient(daemon.endpoint) as client:
        running = client.generate("smollm2", messages=HELLO, params=LONG)
        await running.__anext__()
        queued = client.generate("smollm2", messages=HELLO, params=LONG)
        await queued.start()
        t0 = time.perf_counter()
        with pytest.raises(RuntimeRequestError) as err:
            await collect(client, messages=HELLO, params=LONG)
        assert err.value.code == "busy"
        assert time.perf_counter() - t0 < 0.5
        await running.aclose()
        await queued.aclose()
        # Once the aborts land, the model serves again.
        _, done = await collect(client, messages=HELLO, params=SamplingParams(max_tokens=3))
        assert done.completion_tokens == 3


async def test_abort_stops_generation_within_one_token(shared_daemon: Daemon) -> None:
    async with RuntimeClient(shared_daemon.endpoint) as client:
        stream = client.generate("smollm2", messages=HELLO, params=LONG)
        received = 0
        async for _ in stream:
            received += 1
            if received == 10:
                await client.abort(stream.id)
                break
        with pytest.raises(RuntimeRequestError) as err:
            async for _ in stream:
                received += 1
        assert err.value.code == "aborted"
        generated = int(err.value.extra["completion_tokens"])  # type: ignore[call-overload]
        assert generated - received <= 2, (generated, received)
        # The worker is free again: the next request starts without waiting for the old one.
        _, done = await collect(client, messages=HELLO, params=SamplingParams(max_tokens=2))
        assert done.perf.queue_ms < 500


async def test_leaving_the_stream_early_aborts_it(shared_daemon: Daemon) -> None:
    async with RuntimeClient(shared_daemon.endpoint) as client:
        async with client.generate("smollm2", messages=HELLO, params=LONG) as stream:
            async for _ in stream:
                break
        t0 = time.perf_counter()
        _, done = await collect(client, messages=HELLO, params=SamplingParams(max_tokens=2))
    # Had the 2000 tokens run on, this request would have waited for them (20 s and more).
    assert time.perf_counter() - t0 < 3.0
    assert done.perf.queue_ms < 500


async def test_deadline_expiry_running_and_queued(shared_daemon: Daemon) -> None:
    async with RuntimeClient(shared_daemon.endpoint) as client:
        t0 = time.perf_counter()
        running = client.generate("smollm2", messages=HELLO, params=LONG, timeout=0.6)
        await running.start()
        queued = client.generate("smollm2", messages=HELLO, params=LONG, timeout=0.3)
        with pytest.raises(RuntimeRequestError) as q_err:
            async for _ in queued:
                pass
        assert q_err.value.code == "deadline_exceeded"
        assert "queue" in q_err.value.message
        assert time.perf_counter() - t0 < 1.0
        with pytest.raises(RuntimeRequestError) as r_err:
            async for _ in running:
                pass
        assert r_err.value.code == "deadline_exceeded"
        assert time.perf_counter() - t0 < 2.0


async def test_sigkill_mid_stream_then_restart_with_the_same_client(make_daemon: type[Daemon]) -> None:
    daemon = make_daemon("--model", demo_spec(n_threads=2)).start()
    async with RuntimeClient(daemon.endpoint) as client:
        stream = client.generate("smollm2", messages=HELLO, params=LONG)
        await stream.__anext__()
        daemon.kill()
        t0 = time.perf_counter()
        with pytest.raises(RuntimeUnavailableError):
            async for _ in stream:
                pass
        assert time.perf_counter() - t0 < 2.0

        # While it is down, a request fails fast, and is not replayed once the daemon is back.
        t0 = time.perf_counter()
        with pytest.raises(RuntimeUnavailableError):
            await collect(client, messages=HELLO, params=SamplingParams(max_tokens=3))
        assert time.perf_counter() - t0 < 1.5

        daemon.start()
        _, done = await collect(client, messages=HELLO, params=SamplingParams(max_tokens=3))
        assert done.completion_tokens == 3
        (model,) = await client.models()
        assert model.served == 1, "the request sent while the daemon was down must not run later"


async def test_bad_loads_get_errors_and_the_daemon_keeps_serving(shared_daemon: Daemon, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(demo_model_path().read_bytes()[:200_000])
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model at all" * 100)
    cases = [
        (ModelConfig("missing", "llamacpp", str(tmp_path / "nope.gguf")), "not found"),
        (ModelConfig("truncated", "llamacpp", str(truncated)), "could not load"),
        (ModelConfig("garbage", "llamacpp", str(garbage)), "not a GGUF"),
        (ModelConfig("weird", "tensorflow", str(garbage)), "unknown backend"),
        (ModelConfig("badparam", "llamacpp", str(demo_model_path()), {"n_ctx": "big"}), "n_ctx"),
        (ModelConfig("badparam2", "llamacpp", str(demo_model_path()), {"warp": 9}), "unknown llamacpp"),
    ]
    async with RuntimeClient(shared_daemon.endpoint) as client:
        for config, message in cases:
            with pytest.raises(RuntimeRequestError) as err:
                await client.load(config)
            assert err.value.code == "load_failed"
            assert message in err.value.message
        with pytest.raises(RuntimeRequestError) as err:
            await client.call("load", {"name": "../etc", "backend": "llamacpp", "path": "x"})
        assert err.value.code == "bad_request"
        with pytest.raises(RuntimeRequestError) as err:
            await client.call("generate", {"model": "smollm2", "messages": "hi"})
        assert err.value.code == "bad_request"
        with pytest.raises(RuntimeRequestError) as err:
            async for _ in client.generate("nope", messages=HELLO):
                pass
        assert err.value.code == "unknown_model"
        _pieces, done = await collect(client, messages=HELLO, params=SamplingParams(max_tokens=3))
        assert done.completion_tokens == 3
        states = {m.name: m.state for m in await client.models()}
    assert states["smollm2"] == "ready" and states["truncated"] == "failed"
    assert shared_daemon.alive()


async def test_load_generate_unload_over_the_wire(make_daemon: type[Daemon]) -> None:
    daemon = make_daemon("--no-demo").start(ready_models=())
    async with RuntimeClient(daemon.endpoint) as client:
        assert await client.models() == []
        info = await client.load(ModelConfig("tiny", "llamacpp", str(demo_model_path()), {"n_threads": 2}))
        assert info.state == "ready" and info.name == "tiny" and info.context
        async with client.generate("tiny", messages=HELLO, params=SamplingParams(max_tokens=4)) as s:
            text = "".join([t async for t in s])
        assert text and s.done is not None and s.done.completion_tokens == 4
        await client.unload("tiny")
        with pytest.raises(RuntimeRequestError) as err:
            await client.unload("tiny")
        assert err.value.code == "unknown_model"
        hello = await client.hello()
        assert hello.protocol == 1 and hello.pid == daemon.proc.pid and hello.models == ()


async def test_sigterm_aborts_inflight_work_and_exits_zero(make_daemon: type[Daemon]) -> None:
    daemon = make_daemon("--model", demo_spec(n_threads=2), env={"LLMSERVER_RUNTIME_GRACE_SECONDS": "1"})
    daemon.start()
    async with RuntimeClient(daemon.endpoint) as client:
        stream = client.generate("smollm2", messages=HELLO, params=LONG)
        await stream.__anext__()
        t0 = time.perf_counter()
        code = await asyncio.to_thread(daemon.terminate, 10)
        assert code == 0
        assert time.perf_counter() - t0 < 4.0
        with pytest.raises((RuntimeRequestError, RuntimeUnavailableError)):
            async for _ in stream:
                pass
    assert "stopped" in daemon.log_text()


async def test_stream_interval_coalesces_text_without_changing_it(shared_daemon: Daemon, make_daemon: Any) -> None:
    """A daemon with a stream interval sends a few tokens per frame; the text is the same."""
    params = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)
    daemon = make_daemon("--model", demo_spec(n_threads=2), env={"LLMSERVER_RUNTIME_STREAM_INTERVAL_MS": "500"})
    daemon.start()
    async with RuntimeClient(shared_daemon.endpoint) as client:
        per_token, done_a = await collect(client, prompt="Once upon a time", params=params)
    async with RuntimeClient(daemon.endpoint) as client:
        t0 = time.perf_counter()
        coalesced: list[str] = []
        first_at = 0.0
        async with client.generate("smollm2", prompt="Once upon a time", params=params) as stream:
            async for text in stream:
                first_at = first_at or time.perf_counter()
                coalesced.append(text)
        done_b = stream.done
        # A single token: its text travels with `done`, and is not lost.
        one, done_one = await collect(client, prompt="Once upon a time", params=SamplingParams(max_tokens=1))
    assert done_a is not None and done_b is not None and done_one is not None
    assert done_a.completion_tokens == done_b.completion_tokens == 64
    assert "".join(coalesced) == "".join(per_token)
    assert len(per_token) >= 32, "interval 0 sends (almost) every token on its own"
    assert len(coalesced) <= 16, f"expected a few tokens per frame, got {len(coalesced)} frames"
    assert first_at - t0 < 0.2 + done_b.perf.queue_ms / 1000 + done_b.perf.prefill_ms / 1000, "first text at once"
    assert done_one.completion_tokens == 1 and "".join(one) == "".join(per_token)[: len("".join(one))] and one


def _nice_of_threads(pid: int) -> dict[int, int]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rpartition(")")[2].split()
        out[int(task.name)] = int(fields[16])  # field 19 of stat: nice
    return out


async def test_model_threads_run_below_the_daemon(shared_daemon: Daemon) -> None:
    """llama.cpp's threads run at a lower priority than the thread that delivers tokens."""
    async with RuntimeClient(shared_daemon.endpoint) as client:
        await collect(client, messages=HELLO, params=SamplingParams(max_tokens=4))
    assert shared_daemon.proc is not None
    pid = shared_daemon.proc.pid
    nice = _nice_of_threads(pid)
    base = os.getpriority(os.PRIO_PROCESS, 0)  # the daemon inherits ours (pytest may run under nice)
    assert nice[pid] == base, "the main thread (reads requests) keeps the daemon's priority"
    lowered = [tid for tid, n in nice.items() if n == min(19, base + 5)]
    assert base == 19 or len(lowered) >= 2, f"the model worker and llama.cpp's helper run 5 levels lower: {nice}"


async def test_quick_requests_leave_nothing_behind(shared_daemon: Daemon) -> None:
    """Requests that end before `submit` returns are forgotten too (none stays "active")."""
    async with RuntimeClient(shared_daemon.endpoint) as client:
        one = SamplingParams(max_tokens=1, temperature=0.0)
        for _ in range(5):
            await asyncio.gather(*(collect(client, prompt="Hi", params=one) for _ in range(10)))
        assert (await client.hello()).active == 0
