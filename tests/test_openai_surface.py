"""Issue 12: tools, structured output and logprobs with the official client against the real stack.

The demo model (SmolLM2-135M) is far too small to call functions or write JSON reliably by itself;
llama.cpp grammars make every call and every JSON answer parse, which is what these tests show.
Each checks the request's ledger row. Every body and chunk is also checked against OpenAI's schema
(``tests/openapi.py``, the autouse fixture).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.harness import Daemon, Proxy

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# Grammar-constrained decoding is slower than free text and the machine may be shared: room beyond the
# suite's default 120 s, so a slow run fails one test rather than the timeout stopping the whole suite.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def client(proxy: Proxy, openai_client: Callable[..., OpenAI]) -> OpenAI:
    return openai_client(proxy.base_url, proxy.make_key())


def ledger(proxy: Proxy, request_id: str) -> tuple[Any, ...]:
    rows = proxy.query(
        "SELECT endpoint, prompt_tokens, completion_tokens, status, streamed FROM token_usage_events "
        "WHERE request_id = ?",
        (request_id,),
    )
    assert len(rows) == 1, rows
    return rows[0]


def test_tool_call_round_trip(proxy: Proxy, client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=40, seed=1
    )
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    assert first.usage is not None and first.usage.completion_tokens > 0
    assert ledger(proxy, raw.headers["x-request-id"]) == (
        "/v1/chat/completions",
        first.usage.prompt_tokens,
        first.usage.completion_tokens,
        200,
        0,
    )
    conversation = [*ASK, choice.message.model_dump(exclude_none=True)]
    conversation.append({"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21, "sky": "sunny"}'})
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=conversation, tools=[WEATHER], tool_choice="none", max_tokens=12, seed=1
    )
    answer = raw.parse()
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    assert answer.usage is not None and answer.usage.prompt_tokens > first.usage.prompt_tokens
    assert ledger(proxy, raw.headers["x-request-id"])[1:4] == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
        200,
    )


def test_tool_call_round_trip_streamed(proxy: Proxy, client: OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    with client.chat.completions.with_streaming_response.create(
        model="smollm2",
        messages=ASK,
        tools=[WEATHER],
        tool_choice=named,  # type: ignore[arg-type]
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        request_id = raw.headers["x-request-id"]
        chunks = list(raw.parse())
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    head, pieces = deltas[0], deltas[1:]
    assert head.id and head.function and head.function.name == "get_weather" and head.function.arguments == ""
    assert len(pieces) >= 1 and all(p.id is None and p.function and p.function.name is None for p in pieces)
    arguments = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert isinstance(json.loads(arguments)["city"], str)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    usage = chunks[-1].usage
    assert usage is not None and ledger(proxy, request_id) == (
        "/v1/chat/completions",
        usage.prompt_tokens,
        usage.completion_tokens,
        200,
        1,
    )
    call = {"id": head.id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    conversation = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}]
    conversation.append({"role": "tool", "tool_call_id": head.id, "content": "21 C, sunny"})
    stream = client.chat.completions.create(
        model="smollm2",
        messages=conversation,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=12,
        stream=True,
        seed=2,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.strip()


def test_tool_choice_auto_lets_the_model_choose_and_either_answer_is_well_formed(proxy: Proxy, client: OpenAI) -> None:
    """With ``auto`` the model decides: it wrote text, or a call that parses against the schema."""
    kinds = set()
    for seed in range(2):
        r = client.chat.completions.create(
            model="smollm2",
            messages=ASK,
            tools=[WEATHER],  # type: ignore[list-item]
            max_tokens=32,
            seed=seed,
        )
        message = r.choices[0].message
        if message.tool_calls:
            assert message.tool_calls[0].function.name == "get_weather"
            if r.choices[0].finish_reason == "tool_calls":  # else "length": the arguments so far
                assert isinstance(json.loads(message.tool_calls[0].function.arguments)["city"], str)
            kinds.add("call")
        else:
            assert message.content and not message.content.startswith("<tool_call>")
            kinds.add("text")
    assert kinds


class City(BaseModel):
    name: str
    country: str
    population: int


def test_parse_with_a_pydantic_model_returns_an_object(proxy: Proxy, client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.parse(
        model="smollm2",
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format=City,
        max_tokens=60,
        seed=4,
    )
    parsed = raw.parse().choices[0].message.parsed
    assert isinstance(parsed, City) and isinstance(parsed.population, int)
    assert ledger(proxy, raw.headers["x-request-id"])[3] == 200


@pytest.mark.timeout(1200)  # 20 constrained generations on a shared 2-core machine
def test_json_object_always_parses(proxy: Proxy, openai_client: Callable[..., OpenAI]) -> None:
    """Over 20 seeds, every answer is a JSON object (none is cut by max_tokens)."""
    client = openai_client(proxy.base_url, proxy.make_key(), timeout=300)
    for seed in range(20):
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2",
            messages=[{"role": "user", "content": 'Name one animal as a JSON object, like {"animal": "cat"}.'}],
            response_format={"type": "json_object"},
            max_tokens=160,  # room to close what the model opens; a cut answer would not parse
            seed=seed,
            temperature=0.7,
        )
        r = raw.parse()
        assert r.choices[0].finish_reason == "stop", (seed, r.choices[0].message.content)
        assert isinstance(json.loads(r.choices[0].message.content or ""), dict), seed
        assert ledger(proxy, raw.headers["x-request-id"])[3] == 200


def test_chat_logprobs_are_the_models_distribution(proxy: Proxy, client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=ASK, max_tokens=8, logprobs=True, top_logprobs=5, seed=5
    )
    r = raw.parse()
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 5
        tops = [x.logprob for x in t.top_logprobs]
        assert tops == sorted(tops, reverse=True) and t.logprob <= tops[0] + 1e-6
        assert 0 < sum(math.exp(x) for x in tops) <= 1 + 1e-6  # the five best of one distribution
    assert ledger(proxy, raw.headers["x-request-id"])[3] == 200


def test_greedy_token_is_the_most_likely(proxy: Proxy, client: OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=4, logprobs=True, top_logprobs=1, temperature=0
    )
    for t in r.choices[0].logprobs.content or []:  # type: ignore[union-attr]
        assert t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-9


def test_completion_logprobs(proxy: Proxy, client: OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model="smollm2", prompt="The capital of France is", max_tokens=5, logprobs=3, seed=1
    )
    r = raw.parse()
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and "".join(lp.tokens) == r.choices[0].text
    assert len(lp.token_logprobs or []) == len(lp.tokens) == len(lp.top_logprobs or [])
    assert all(len(top) == 3 for top in lp.top_logprobs or [])
    assert lp.text_offset == sorted(lp.text_offset or [])
    assert ledger(proxy, raw.headers["x-request-id"])[0] == "/v1/completions"


def test_streamed_completion_chunks_have_no_null_finish_reason(proxy: Proxy) -> None:
    key = proxy.make_key()
    body = {"model": "smollm2", "prompt": "Once", "max_tokens": 4, "stream": True, "logprobs": 1}
    r = httpx.post(f"{proxy.base_url}/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert all("finish_reason" not in e["choices"][0] for e in events[:-1])
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all("system_fingerprint" not in e and "usage" not in e for e in events)
    assert len(events[-1]["choices"][0]["logprobs"]["tokens"]) >= 1


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_fields_that_cannot_be_honoured_are_refused_by_name(
    proxy: Proxy, client: OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=2, extra_body=extra)
    assert refused.value.param == param


def test_image_parts_on_a_text_model_are_refused(proxy: Proxy, client: OpenAI) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="smollm2", messages=messages, max_tokens=2)  # type: ignore[arg-type]
    assert refused.value.param == "messages[0].content" and "image_url" in str(refused.value)


def test_unknown_fields_are_ignored_and_logged(
    shared_daemon: Daemon, make_proxy: Callable[..., Proxy], openai_client: Callable[..., OpenAI]
) -> None:
    """Unknown extensions do not fail the request; a debug line names them (``user`` is known: not listed)."""
    logged = make_proxy(shared_daemon.endpoint, LLMSERVER_LOG_LEVEL="DEBUG").start()
    client = openai_client(logged.base_url, logged.make_key())
    extra = {"mirostat_mode": 0, "cache_prompt": True}
    r = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=2, user="u1", extra_body=extra)
    assert r.choices[0].message.content is not None
    log = logged.log_path.read_text()
    assert "ignored unknown request fields: cache_prompt, mirostat_mode" in log
    assert "u1" not in log


def test_a_request_past_its_deadline_is_a_504_that_sdks_do_not_retry(
    shared_daemon: Daemon, make_proxy: Callable[..., Proxy], openai_client: Callable[..., OpenAI]
) -> None:
    slow = make_proxy(shared_daemon.endpoint, LLMSERVER_REQUEST_TIMEOUT="1").start()
    client = openai_client(slow.base_url, slow.make_key())
    with pytest.raises(openai.APIStatusError) as late:  # counting on for 4000 tokens takes far more than 1 s
        client.completions.create(model="smollm2", prompt="1, 2, 3, 4, 5, 6, 7, 8,", max_tokens=4000, temperature=0)
    assert late.value.status_code == 504
    assert late.value.response.headers["x-should-retry"] == "false"
