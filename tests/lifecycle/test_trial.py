"""Issue 19: a model's test cannot be used to flood the runtime: one at a time per model, a few
tokens, greedy, a deadline. The generation is scripted here (the real daemon's answer is in
tests/admin/test_models_by_state_api.py); the stand-in holds its answer until told, so that a second
test provably arrives while the first runs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.lifecycle.errors import ModelStateError
from proxy.lifecycle.trial import MAX_TOKENS, TIMEOUT, TrialError, Trials
from proxy.storage.models import ModelRecord
from runtime.api.errors import RuntimeRequestError
from runtime.api.protocol import Done, Perf, SamplingParams

RECORD = ModelRecord(
    id=1, name="smol", kind="llm", backend="llamacpp", source_repo=None, files=(), patterns=(), revision=None,
    local_path="/m.gguf", params={}, desired_state="running", actual_state="running", download_state="local",
    download_progress=None, downloaded_bytes=None, total_bytes=None, size_bytes=None, sha256=None, error=None,
    hf_token_id=None, keep_alive=None, from_runtime=False, failures=0, retry_at=None, created_at=0.0, updated_at=0.0,
)  # fmt: skip


class HeldStream:
    def __init__(self, release: asyncio.Event, fail: bool) -> None:
        self.release, self.fail = release, fail
        self.done: Done | None = None
        self.closed = False

    async def admitted(self) -> int:
        return 0

    async def _texts(self) -> AsyncIterator[str]:
        await self.release.wait()
        if self.fail:
            raise RuntimeRequestError("busy", "the model's queue is full")
        yield "Hello"
        yield " there."
        self.done = Done("stop", 12, 3, Perf(0.0, 5.0, 40.0))

    def __aiter__(self) -> AsyncIterator[str]:
        return self._texts()

    async def aclose(self) -> None:
        self.closed = True


class HeldRuntime:
    def __init__(self, fail: bool = False) -> None:
        self.release = asyncio.Event()
        self.asked: list[dict[str, Any]] = []
        self.streams: list[HeldStream] = []
        self.fail = fail

    def generate(self, model: str, **kw: Any) -> HeldStream:
        self.asked.append({"model": model, **kw})
        self.streams.append(HeldStream(self.release, self.fail))
        return self.streams[-1]

    async def models(self) -> list[dict[str, Any]]:
        return []


@pytest.mark.asyncio
async def test_one_test_at_a_time_per_model_with_a_few_greedy_tokens() -> None:
    trials, runtime = Trials(), HeldRuntime()
    first = asyncio.ensure_future(trials.run(runtime, RECORD))
    await asyncio.sleep(0.05)
    assert trials.running("smol")
    with pytest.raises(ModelStateError, match="already running"):
        await trials.run(runtime, RECORD)
    other = dataclasses.replace(RECORD, name="other")
    second = asyncio.ensure_future(trials.run(runtime, other))  # another model is not held up
    await asyncio.sleep(0.05)
    runtime.release.set()
    result, _ = await first, await second
    assert result.text == "Hello there." and result.completion_tokens == 3 and result.latency_ms > 0
    assert result.first_text_ms is not None and result.first_text_ms <= result.latency_ms
    assert len(runtime.asked) == 2 and not trials.running("smol")
    params: SamplingParams = runtime.asked[0]["params"]
    assert params.max_tokens == MAX_TOKENS <= 16 and params.temperature == 0.0
    assert runtime.asked[0]["timeout"] == TIMEOUT <= 60
    assert all(s.closed for s in runtime.streams)
    assert (await trials.run(runtime, RECORD)).text == "Hello there."  # free again once answered


@pytest.mark.asyncio
async def test_a_model_that_is_not_loaded_is_refused_and_a_runtime_error_is_said() -> None:
    trials, runtime = Trials(), HeldRuntime(fail=True)
    stopped = dataclasses.replace(RECORD, desired_state="stopped", actual_state="stopped")
    with pytest.raises(ModelStateError, match="not loaded"):
        await trials.run(runtime, stopped)
    assert runtime.asked == []
    runtime.release.set()
    with pytest.raises(TrialError, match="the model's queue is full"):
        await trials.run(runtime, RECORD)
    assert not trials.running("smol")
