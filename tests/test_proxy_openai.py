"""The running proxy + daemon + real model, driven by the official openai client (issue 3)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.harness import Daemon, Proxy

HELLO = [{"role": "user", "content": "What is the capital of France?"}]


Client = Callable[[Proxy, str], OpenAI]


@pytest.fixture
def client(openai_client: Callable[..., OpenAI]) -> Client:
    """``client(proxy, key)``: an SDK client for that proxy, closed after the test."""
    return lambda proxy, key: openai_client(proxy.base_url, key)


def usage_row(proxy: Proxy, request_id: str) -> tuple[object, ...]:
    rows = proxy.query(
        "SELECT prompt_tokens, completion_tokens, status, streamed, runtime_completion_tokens "
        "FROM token_usage_events WHERE request_id = ?",
        (request_id,),
    )
    assert len(rows) == 1, rows
    return rows[0]


def test_chat_completion_buffered_is_metered_exactly(proxy: Proxy, client: Client) -> None:
    c = client(proxy, proxy.make_key())
    raw = c.chat.completions.with_raw_response.create(model="smollm2", messages=HELLO, max_tokens=24, seed=3)
    r = raw.parse()
    assert r.object == "chat.completion" and r.model == "smollm2"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.prompt_tokens == 14  # OpenAI's count for HELLO in cl100k_base
    request_id = raw.headers["x-request-id"]
    prompt, completion, status, streamed, runtime_completion = usage_row(proxy, request_id)
    assert (prompt, completion, status, streamed) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        200,
        0,
    )
    assert runtime_completion is not None and 1 <= int(runtime_completion) <= 24  # type: ignore[call-overload]


def test_chat_completion_streamed_with_usage_chunk(proxy: Proxy, client: Client) -> None:
    c = client(proxy, proxy.make_key())
    stream = c.chat.completions.create(
        model="smollm2", messages=HELLO, max_tokens=16, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finishes) == 1
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert all(ch.usage is None for ch in chunks[:-1])
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    rows = proxy.query(
        "SELECT prompt_tokens, completion_tokens, streamed FROM token_usage_events WHERE streamed = 1 "
        "ORDER BY id DESC LIMIT 1"
    )
    assert rows == [(last.usage.prompt_tokens, last.usage.completion_tokens, 1)]


def test_completions_buffered_and_streamed(proxy: Proxy, client: Client) -> None:
    c = client(proxy, proxy.make_key())
    r = c.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text.startswith(" 5")
    assert r.usage is not None and r.usage.prompt_tokens == 11  # cl100k_base: "1", ",", " ", "2"...
    pieces = list(c.completions.create(model="smollm2", prompt="1, 2, 3, 4,", max_tokens=6, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == r.choices[0].text


def test_models_are_filtered_by_the_keys_allow_list(proxy: Proxy, client: Client) -> None:
    everything = client(proxy, proxy.make_key())
    assert [m.id for m in everything.models.list()] == ["smollm2"]
    assert everything.models.retrieve("smollm2").id == "smollm2"
    limited = client(proxy, proxy.make_key(allowed_models=["another"]))
    assert [m.id for m in limited.models.list()] == []
    with pytest.raises(openai.NotFoundError):
        limited.models.retrieve("smollm2")


def test_errors_map_to_the_sdks_exception_classes(proxy: Proxy, client: Client) -> None:
    good = proxy.make_key()
    with pytest.raises(openai.AuthenticationError) as auth:
        client(proxy, "llms_notarealkey00_" + "x" * 32).chat.completions.create(model="smollm2", messages=HELLO)
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(proxy, "garbage").models.list()
    expired = proxy.make_key(expires_at=time.time() - 10)
    with pytest.raises(openai.AuthenticationError) as exp:
        client(proxy, expired).models.list()
    assert exp.value.code == "expired_api_key"
    with pytest.raises(openai.PermissionDeniedError) as perm:
        client(proxy, proxy.make_key(allowed_models=["another"])).chat.completions.create(
            model="smollm2", messages=HELLO
        )
    assert perm.value.code == "model_not_allowed"
    with pytest.raises(openai.NotFoundError) as nf:
        client(proxy, good).chat.completions.create(model="gpt-17", messages=HELLO)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client(proxy, good).chat.completions.create(model="smollm2", messages=HELLO, max_tokens=10**9)
    assert bad.value.param == "max_tokens"
    with pytest.raises(openai.RateLimitError) as quota:
        client(proxy, proxy.make_key(token_limit=10)).chat.completions.create(model="smollm2", messages=HELLO)
    assert quota.value.code == "insufficient_quota"
    assert quota.value.response.headers["x-should-retry"] == "false"


def test_requests_per_minute_window(proxy: Proxy, client: Client) -> None:
    c = client(proxy, proxy.make_key(rpm_limit=2))
    for _ in range(2):
        ok = c.chat.completions.with_raw_response.create(model="smollm2", messages=HELLO, max_tokens=1)
        assert ok.headers["x-ratelimit-limit-requests"] == "2"
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=1)
    assert err.value.code == "rate_limit_exceeded"
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_revoked_key_stops_working_within_a_second(proxy: Proxy, client: Client) -> None:
    key = proxy.make_key()
    c = client(proxy, key)
    assert c.models.list()  # now cached as verified in the proxy
    proxy.revoke(key)
    start = time.monotonic()
    while True:
        try:
            c.models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() - start < 1.0, "revocation took more than a second"
        time.sleep(0.05)


def test_dead_runtime_is_a_503_internal_server_error(make_proxy: object, client: Client) -> None:
    proxy = make_proxy("ipc:///tmp/llmserver-nobody-listens/rt.sock").start()  # type: ignore[operator]
    c = client(proxy, proxy.make_key())
    start = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="smollm2", messages=HELLO)
    assert err.value.status_code == 503
    assert err.value.response.headers["retry-after"] == "1"
    assert time.monotonic() - start < 1.0


def test_busy_runtime_is_a_503_with_retry_after(
    make_daemon: Callable[..., Daemon], make_proxy: Callable[..., Proxy], client: Client
) -> None:
    from tests.harness import demo_spec

    daemon = make_daemon("--model", demo_spec(n_threads=2), queue_depth=1).start()
    proxy = make_proxy(daemon.endpoint).start()
    c = client(proxy, proxy.make_key())
    long = {"model": "smollm2", "prompt": "1, 2, 3, 4,", "max_tokens": 300, "stream": True}
    running, queued = c.completions.create(**long), c.completions.create(**long)  # type: ignore[call-overload]
    next(iter(running))
    start = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        c.completions.create(model="smollm2", prompt="hi", max_tokens=1)
    assert err.value.status_code == 503 and err.value.code == "model_busy"
    assert err.value.response.headers["retry-after"] == "1"
    assert time.monotonic() - start < 1.0
    running.close()
    queued.close()


def _words(text: str) -> list[str]:
    return text.replace(",", " ").split()


def _greedy(c: OpenAI, prompt: str, **kw: Any) -> str:
    """16 tokens of a temperature-0 completion."""
    return c.completions.create(model="smollm2", prompt=prompt, max_tokens=16, temperature=0, **kw).choices[0].text


# A greedy continuation of each prompt repeats its word (checked below); a penalty of 2 on the
# tokens already generated makes the model leave the loop within a few tokens. Observed (SmolLM2,
# 16 tokens): "1, 1, ..." -> " 1, 1, 2,\n- The sum of the first" with frequency_penalty=2;
# "yes, ..." -> " yes, no, no\n\nThe result is ..." (frequency) and " yes, no, no, no, ..." (presence).
# presence_penalty does not break "1, 1, ...": a flat -2 is less than the lead of " 1" there.
@pytest.mark.parametrize(
    ("field", "prompt", "word"),
    [
        ("frequency_penalty", "1, 1, 1, 1, 1, 1,", "1"),
        ("frequency_penalty", "yes, yes, yes, yes, yes,", "yes"),
        ("presence_penalty", "yes, yes, yes, yes, yes,", "yes"),
    ],
)
def test_penalties_break_a_greedy_repetition(proxy: Proxy, client: Client, field: str, prompt: str, word: str) -> None:
    c = client(proxy, proxy.make_key())
    plain, penalised = _greedy(c, prompt, **{field: 0}), _greedy(c, prompt, **{field: 2})
    assert set(_words(plain)) == {word} and len(_words(plain)) >= 5, plain  # the loop the penalty must break
    assert penalised != plain
    others = [w for w in _words(penalised) if w != word]
    assert len(others) >= 2 and _words(penalised).count(word) <= 2, penalised


def test_top_k_1_and_min_p_1_make_sampling_greedy_whatever_the_seed(proxy: Proxy, client: Client) -> None:
    c = client(proxy, proxy.make_key())
    prompt = "Once upon a time"

    def sampled(seed: int, **extra: object) -> str:
        r = c.completions.create(
            model="smollm2", prompt=prompt, max_tokens=16, temperature=1.0, seed=seed, extra_body=extra
        )
        return r.choices[0].text

    assert sampled(1) != sampled(2)  # at temperature 1 the seed matters...
    greedy = _greedy(c, prompt, seed=1)
    assert sampled(1, top_k=1) == sampled(2, top_k=1) == greedy  # ...unless one token is left
    assert sampled(1, min_p=1.0) == sampled(2, min_p=1.0) == greedy


def test_llama_cpp_extensions_are_accepted_and_applied(proxy: Proxy, client: Client) -> None:
    c = client(proxy, proxy.make_key())
    extensions = {"top_k": 1, "min_p": 0.1, "repeat_penalty": 1.1}
    r = c.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=8, extra_body=extensions)
    assert r.choices[0].message.content and r.usage is not None and r.usage.completion_tokens >= 1
    assert set(_words(_greedy(c, "1, 1, 1, 1, 1, 1,"))) == {"1"}
    penalised = _greedy(c, "1, 1, 1, 1, 1, 1,", extra_body={"repeat_penalty": 1.1})
    assert _words(penalised)[:4] == ["1", "2", "3", "4"], penalised  # observed: " 1, 2, 3, 4, 5, "


def test_sampling_fields_parsed_with_the_runtimes_defaults() -> None:
    from proxy.openai.protocol import parse_chat, parse_completion

    req = parse_chat({"model": "smollm2", "messages": HELLO}, 512, 8192)
    sampling = (req.presence_penalty, req.frequency_penalty, req.top_k, req.min_p, req.repeat_penalty)
    assert sampling == (0.0, 0.0, 40, 0.05, 1.0)  # what requests that do not send them always got
    body = {"model": "m", "prompt": "x", "presence_penalty": -2, "frequency_penalty": 1.5}
    req = parse_completion(body | {"top_k": 0, "min_p": 1, "repeat_penalty": 10}, 512, 8192)
    sampling = (req.presence_penalty, req.frequency_penalty, req.top_k, req.min_p, req.repeat_penalty)
    assert sampling == (-2.0, 1.5, 0, 1.0, 10.0)
