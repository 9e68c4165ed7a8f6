"""Issue 18: a megabyte tool description was counted on the event loop (0.64 s stall)."""

from __future__ import annotations

import asyncio
import io
import json
import random
import threading
import time

import pytest

from proxy.metering import tokens
from proxy.metering.request import GenerationRequest
from runtime.api.output import OutputSpec
from tests.inprocess.conftest import InProcess
from tests.inprocess.test_generation_paths import CHAT, auth, chat

_WORDS = random.Random(18)
# 1 MB of made-up words (over 500,000 tokens; a repeated word is cached by tiktoken and counts too fast)
BIG = " ".join("".join(_WORDS.choices("abcdefghijklmnopqrstuvwxyz", k=_WORDS.randint(2, 9))) for _ in range(170_000))
TOOL = {"type": "function", "function": {"name": "f", "description": BIG, "parameters": {"type": "object"}}}


@pytest.mark.asyncio
async def test_counting_a_large_tool_definition_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    original = tokens._count_request

    def spy(req: GenerationRequest) -> int:
        seen.append(threading.current_thread().name)
        return original(req)

    monkeypatch.setattr(tokens, "_count_request", spy)
    messages = ({"role": "user", "content": "hi"},)
    req = GenerationRequest(
        "m", messages, None, 5, 1, 1, 0, 0, 40, 0.05, 1, (), None, False, False, output=OutputSpec(tools=(TOOL,))
    )
    assert await tokens.count_request(req) > 500_000
    assert seen[0].startswith("count"), "the tools' definitions were counted on the event loop"


@pytest.mark.asyncio
async def test_a_megabyte_tool_description_does_not_stall_other_requests(app: InProcess) -> None:
    """While a request with a 1 MB description is counted, the loop keeps answering /healthz (0.63 s gap before)."""
    key, _ = await app.key()
    gaps: list[float] = []

    async def ping() -> None:
        last = time.perf_counter()
        while True:  # the time between two answers, sleep included: a blocked loop delays either
            await (await app.http.get("/healthz")).read()
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    pinger = asyncio.create_task(ping())
    await asyncio.sleep(0.05)
    body = {**chat(), "tools": [TOOL], "tool_choice": "none"}
    for _ in range(2):
        data = io.BytesIO(json.dumps(body).encode())  # a large body as bytes would warn
        r = await app.http.post(CHAT, data=data, headers={**auth(key), "Content-Type": "application/json"})
        assert r.status == 200, await r.text()
        assert (await r.json())["usage"]["prompt_tokens"] > 500_000
    pinger.cancel()
    assert max(gaps) < 0.3, f"/healthz waited {max(gaps):.2f} s behind the counting"
