"""Issue 25, through the real proxy and daemon: a prompt that cannot fit the model's context is refused
at admission, before any queue; a buffered answer cut by the request's deadline bills what was
delivered (nothing), while its row keeps what the model generated."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from proxy.metering.tokens import count_text
from runtime.api.client import RuntimeClient
from runtime.api.state import ModelState
from tests.harness import Daemon, Proxy

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # the demo model goes on counting for as long as it may


def _smollm2(endpoint: str) -> ModelState:
    async def describe() -> ModelState:
        async with RuntimeClient(endpoint) as client:
            return next(m for m in await client.models() if m.name == "smollm2")

    return asyncio.run(describe())


def test_a_prompt_beyond_the_context_is_refused_before_the_queue(
    proxy: Proxy, shared_daemon: Daemon, openai_client: Callable[..., OpenAI]
) -> None:
    """Old code: Open WebUI's 6,593-token "Hello" queued behind other requests and got its 400 after 10-102 s."""
    assert _smollm2(shared_daemon.endpoint).context == 2048
    key = proxy.make_key("too-long")
    client = openai_client(proxy.base_url, key)
    busy = openai_client(proxy.base_url, proxy.make_key("occupier"), timeout=180)
    with ThreadPoolExecutor(1) as pool:
        occupier = pool.submit(
            lambda: busy.completions.create(model="smollm2", prompt=COUNTING, max_tokens=200, temperature=0)
        )
        deadline = time.monotonic() + 30
        while not _smollm2(shared_daemon.endpoint).running:
            assert time.monotonic() < deadline and not occupier.done()
            time.sleep(0.05)
        before = _smollm2(shared_daemon.endpoint)
        start = time.monotonic()
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "hello " * 6600}])
        waited = time.monotonic() - start
        after = _smollm2(shared_daemon.endpoint)
        occupier.result(180)
    assert err.value.code == "context_length_exceeded" and "2048" in err.value.message
    assert waited < 2.0, f"the refusal took {waited:.1f} s"
    assert after.running and after.served == before.served  # the daemon never queued it
    rows = proxy.query(
        "SELECT status, prompt_tokens, completion_tokens FROM token_usage_events "
        "WHERE api_key_id = (SELECT id FROM api_keys WHERE name = 'too-long')"
    )
    assert rows == [(400, 0, 0)]
    print(f"METER context refusal while the model was busy: {waited * 1000:.0f} ms")


def test_a_prompt_within_the_margin_is_left_to_the_runtime(proxy: Proxy, openai_client: Callable[..., OpenAI]) -> None:
    """The bound allows for a model tokenizer that needs fewer tokens than cl100k_base, so a prompt a little
    over the context in cl100k_base tokens is not refused at admission: the runtime, which counts exactly, decides."""
    client = openai_client(proxy.base_url, proxy.make_key("near-the-limit"), timeout=120)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "hello " * 2500}])
    assert err.value.code == "context_length_exceeded" and "the prompt is" in err.value.message  # the runtime's words


@pytest.fixture
def impatient(shared_daemon: Daemon, make_proxy: Callable[..., Proxy]) -> Proxy:
    """A proxy whose requests may take ten seconds (a loaded machine needs seconds for the first token)."""
    return make_proxy(shared_daemon.endpoint, LLMSERVER_REQUEST_TIMEOUT="10").start()


def _row(proxy: Proxy, name: str) -> tuple[object, ...]:
    [row] = proxy.query(
        "SELECT status, prompt_tokens, completion_tokens, runtime_prompt_tokens, runtime_completion_tokens "
        "FROM token_usage_events WHERE api_key_id = (SELECT id FROM api_keys WHERE name = ?)",
        (name,),
    )
    return row


def test_a_buffered_answer_cut_by_the_deadline_bills_nothing(impatient: Proxy) -> None:
    """Old code: the 504 was billed the tokens generated, although the client received none of them."""
    key = impatient.make_key("buffered-deadline", token_limit=100_000)
    answer = httpx.post(
        f"{impatient.base_url}/completions",
        json={"model": "smollm2", "prompt": COUNTING, "max_tokens": 1500, "temperature": 0},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "timeout"
    status, prompt, completion, runtime_prompt, runtime_completion = _row(impatient, "buffered-deadline")
    assert (status, prompt, completion) == (504, 0, 0)
    assert isinstance(runtime_prompt, int) and runtime_prompt > 0  # what the model read and generated is kept
    assert isinstance(runtime_completion, int) and runtime_completion > 0
    [(used, reserved)] = impatient.query(
        "SELECT tokens_used, tokens_reserved FROM api_keys WHERE name = 'buffered-deadline'"
    )
    assert (used, reserved) == (0, 0)
    print(f"METER buffered 504: billed 0, the runtime generated {runtime_completion} tokens")


def test_a_streamed_answer_cut_by_the_deadline_bills_what_was_delivered(impatient: Proxy) -> None:
    key = impatient.make_key("streamed-deadline")
    delivered, error = "", None
    with httpx.stream(
        "POST",
        f"{impatient.base_url}/completions",
        json={"model": "smollm2", "prompt": COUNTING, "max_tokens": 1500, "temperature": 0, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: ") :])
            if "error" in chunk:
                error = chunk["error"]
            else:
                delivered += chunk["choices"][0]["text"]
    assert error is not None and error["code"] == "timeout" and delivered
    status, prompt, completion, _, runtime_completion = _row(impatient, "streamed-deadline")
    assert (status, prompt, completion) == (504, count_text(COUNTING), count_text(delivered))
    assert isinstance(runtime_completion, int) and runtime_completion > 0
