"""Issue 18: what a model file can do to the daemon: a chat template that loops for ever kept a core at
100% after the client left and after ``stop``; a FIFO as a model path stayed ``loading`` for ever.

The looping template is the demo model's own file with its template replaced (same length, so the
GGUF's offsets hold): two nested ``range(100000)`` loops, 10^10 iterations.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeRequestError
from runtime.api.models import ModelConfig
from runtime.api.protocol import SamplingParams
from runtime.backends.chat_template import RENDER_SECONDS
from runtime.backends.demo import demo_model_path
from tests.harness import Daemon, demo_spec

pytestmark = [pytest.mark.timeout(180), pytest.mark.asyncio]

LOOP = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
KEY = b"tokenizer.chat_template"


@pytest.fixture(scope="module")
def looping_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("looping") / "looping.gguf"
    shutil.copyfile(demo_model_path(), path)
    with path.open("r+b") as fh:
        head = fh.read(8 << 20)
        at = head.index(KEY) + len(KEY)
        kind, length = struct.unpack("<IQ", head[at : at + 12])
        assert kind == 8  # a GGUF string
        template = (LOOP + "{#" + "x" * length)[: length - 2] + "#}"
        fh.seek(at + 12)
        fh.write(template.encode())
    yield path
    path.unlink()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def busy_for(pid: int, seconds: float) -> float:
    """The daemon's CPU use over ``seconds``, as a fraction of one core."""
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


async def test_a_looping_chat_template_stops_when_the_client_leaves_and_at_its_bound(
    make_daemon: type[Daemon], looping_model: Path
) -> None:
    daemon = make_daemon("--model", f"loop=llamacpp:{looping_model},n_threads=1")
    daemon.start(ready_models=("loop",))
    assert daemon.proc is not None
    pid = daemon.proc.pid
    messages = [{"role": "user", "content": "Hi"}]
    async with RuntimeClient(daemon.endpoint) as client:
        # The client leaves after a second: the render stops, the core is free again.
        stream = client.generate("loop", messages=messages, params=SamplingParams(max_tokens=4), timeout=120)
        await stream.start()
        await asyncio.sleep(1.0)
        await stream.aclose()
        await asyncio.sleep(0.5)
        assert await busy_for(pid, 2.0) < 0.3, "the template still runs after its client left"
        # A client that stays gets an error at the bound, not an answer some hours later.
        started = time.monotonic()
        with pytest.raises(RuntimeRequestError) as caught:
            async with client.generate("loop", messages=messages, params=SamplingParams(max_tokens=4)) as stream:
                async for _ in stream:
                    pass
        assert time.monotonic() - started < RENDER_SECONDS + 10
        assert "chat template did not finish" in caught.value.message
        # A stop while it renders (a stop lets the running request end, queued ones are dropped): the
        # render ends at its bound and the core is free, where it used to spin for hours.
        stream = client.generate("loop", messages=messages, params=SamplingParams(max_tokens=4), timeout=120)
        await stream.start()
        await asyncio.sleep(0.5)
        await client.unload("loop")
        stopped = time.monotonic()
        while await busy_for(pid, 1.0) > 0.3:
            assert time.monotonic() - stopped < RENDER_SECONDS + 10, "the template still runs after stop"
        assert not any(m.name == "loop" for m in await client.models())
        await stream.aclose()
    assert daemon.alive()


async def test_a_fifo_as_model_path_fails_its_load_with_one_message(make_daemon: type[Daemon], tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    daemon = make_daemon("--model", demo_spec(n_threads=1))
    daemon.start()
    async with RuntimeClient(daemon.endpoint) as client:
        with pytest.raises(RuntimeRequestError) as caught:
            await client.load(ModelConfig("fifo", "llamacpp", str(fifo)), timeout=15)
        assert caught.value.code == "load_failed"
        assert caught.value.message == f"model path {fifo} is a named pipe (FIFO), not a model file"
        states = {m.name: m.state for m in await client.models()}
        assert states["fifo"] == "failed"
        directory = ModelConfig("dir", "llamacpp", str(tmp_path))
        with pytest.raises(RuntimeRequestError, match="is a directory, not a model file"):
            await client.load(directory, timeout=15)
