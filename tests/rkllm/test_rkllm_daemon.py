"""The RKLLM backend inside the real daemon (subprocess, ZeroMQ), driven by the real client,
with the stand-in library in place of librkllmrt.so."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeRequestError
from runtime.api.protocol import Done, SamplingParams
from tests.harness import Daemon
from tests.rkllm.fake import Repeat, Token, Waiting, write_script

pytestmark = pytest.mark.asyncio

ASK = [{"role": "user", "content": "How much?"}]
MakeDaemon = Callable[..., Daemon]


def start(make_daemon: MakeDaemon, library: Path, log: Path, models: dict[str, Path], **env: str) -> Daemon:
    specs = [arg for name, path in models.items() for arg in ("--model", f"{name}=rkllm:{path}")]
    full_env = {
        "LLMSERVER_RKLLM_DEVICE_CHECK": "off",
        "LLMSERVER_RKLLM_LIBRARY": str(library),
        "FAKE_RKLLM_LOG": str(log),
        **env,
    }
    return make_daemon(*specs, env=full_env).start(ready_models=tuple(models))


def model(tmp_path: Path, name: str, tokens: list[Token], **directives: int) -> Path:
    return write_script(tmp_path / f"{name}.rkllm", tokens, **directives)


async def collect(client: RuntimeClient, name: str, **params: Any) -> tuple[str, Done]:
    async with client.generate(name, messages=ASK, params=SamplingParams(**params)) as stream:
        text = "".join([t async for t in stream])
    assert stream.done is not None
    return text, stream.done


async def test_streams_with_the_runtimes_exact_counts(make_daemon: MakeDaemon, fake_lib: Path, tmp_path: Path) -> None:
    tokens: list[Token] = ["Hel", "lo ", Waiting(b"\xe2\x82"), b"\xac", "!"]
    daemon = start(make_daemon, fake_lib, tmp_path / "fake.log", {"m": model(tmp_path, "m", tokens)})
    async with RuntimeClient(daemon.endpoint) as client:
        pieces: list[str] = []
        async with client.generate("m", messages=ASK, params=SamplingParams(max_tokens=50)) as stream:
            pieces = [t async for t in stream]
    assert "".join(pieces) == "Hello €!" and all("\ufffd" not in p for p in pieces)
    done = stream.done
    assert done is not None and done.finish_reason == "stop"
    assert (done.prompt_tokens, done.completion_tokens) == (len(b"How much?"), 5)


async def test_abort_mid_run_frees_the_model(make_daemon: MakeDaemon, fake_lib: Path, tmp_path: Path) -> None:
    long = model(tmp_path, "long", [Repeat(100_000, "x")], delay_us=2000)
    daemon = start(make_daemon, fake_lib, tmp_path / "fake.log", {"long": long})
    async with RuntimeClient(daemon.endpoint) as client:
        stream = client.generate("long", messages=ASK, params=SamplingParams(max_tokens=100_000))
        received = 0
        async for text in stream:
            received += len(text)
            if received >= 10:
                await client.abort(stream.id)
                break
        with pytest.raises(RuntimeRequestError) as err:
            async for text in stream:
                received += len(text)
        assert err.value.code == "aborted"
        generated = int(err.value.extra["completion_tokens"])  # type: ignore[call-overload]
        assert generated - received <= 3, (generated, received)
        started = time.monotonic()
        _, done = await collect(client, "long", max_tokens=3)
    assert done.completion_tokens == 3 and time.monotonic() - started < 1.0
    assert "abort" in (tmp_path / "fake.log").read_text()


async def test_two_models_run_in_parallel(make_daemon: MakeDaemon, fake_lib: Path, tmp_path: Path) -> None:
    tokens: list[Token] = [Repeat(10, "p")]
    models = {name: model(tmp_path, name, tokens, delay_us=30_000) for name in ("a", "b")}
    daemon = start(make_daemon, fake_lib, tmp_path / "fake.log", models)
    async with RuntimeClient(daemon.endpoint) as client:
        started = time.monotonic()
        await collect(client, "a")
        single = time.monotonic() - started
        started = time.monotonic()
        results = await asyncio.gather(collect(client, "a"), collect(client, "b"))
        both = time.monotonic() - started
    assert [done.completion_tokens for _, done in results] == [10, 10]
    assert both < 1.5 * single, (single, both)
    domains = {
        line.rsplit("=", 1)[1] for line in (tmp_path / "fake.log").read_text().splitlines() if line.startswith("init")
    }
    assert domains == {"0", "1"}


async def test_sigterm_destroys_every_handle(make_daemon: MakeDaemon, fake_lib: Path, tmp_path: Path) -> None:
    models = {
        "idle": model(tmp_path, "idle", ["a"]),
        "busy": model(tmp_path, "busy", [Repeat(100_000, "b")], delay_us=2000),
    }
    log = tmp_path / "fake.log"
    daemon = start(make_daemon, fake_lib, log, models, LLMSERVER_RUNTIME_GRACE_SECONDS="1")
    async with RuntimeClient(daemon.endpoint) as client:
        stream = client.generate("busy", messages=ASK, params=SamplingParams(max_tokens=100_000))
        await stream.__anext__()
        code = await asyncio.to_thread(daemon.terminate, 15)
        await stream.aclose()
    assert code == 0, daemon.log_text()
    destroyed = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("destroy")]
    assert sorted(destroyed) == sorted(str(path) for path in models.values()), log.read_text()
