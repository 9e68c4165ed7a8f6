"""End to end on the NPU path: the daemon on the rkllm backend (stand-in library) behind the real
proxy answers the official openai client, streamed and not, with usage (issue 4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.harness import Daemon, Proxy
from tests.rkllm.fake import Token, Waiting, write_script

ASK = [{"role": "user", "content": "How much?"}]


def test_openai_client_through_proxy_and_rkllm_daemon(
    make_daemon: Callable[..., Daemon],
    make_proxy: Callable[..., Proxy],
    openai_client: Callable[..., OpenAI],
    fake_lib: Path,
    tmp_path: Path,
) -> None:
    tokens: list[Token] = ["It ", "costs ", "10 ", Waiting(b"\xe2\x82"), b"\xac", "."]
    path = write_script(tmp_path / "npu.rkllm", tokens)
    env = {
        "LLMSERVER_RKLLM_DEVICE_CHECK": "off",
        "LLMSERVER_RKLLM_LIBRARY": str(fake_lib),
        "FAKE_RKLLM_LOG": str(tmp_path / "fake.log"),
    }
    daemon = make_daemon("--model", f"npu=rkllm:{path},target_platform=rk3588", env=env).start(ready_models=("npu",))
    proxy = make_proxy(daemon.endpoint).start()
    client = openai_client(proxy.base_url, proxy.make_key("npu"))

    r = client.chat.completions.create(model="npu", messages=ASK, max_tokens=50)
    assert r.choices[0].message.content == "It costs 10 €."
    assert r.usage is not None and r.usage.completion_tokens > 0
    assert [m.id for m in client.models.list()] == ["npu"]

    chunks = list(
        client.chat.completions.create(
            model="npu", messages=ASK, max_tokens=50, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "It costs 10 €."
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens == r.usage.prompt_tokens
    rows = proxy.query("SELECT runtime_completion_tokens, completion_tokens, status FROM token_usage_events")
    # The runtime's exact count (6 NPU tokens, from perf) sits beside the cl100k_base bill.
    assert [row[0] for row in rows] == [6, 6] and all(row[2] == 200 for row in rows)

    # Issue 12: what the RKLLM path cannot honour is a 400 naming the field, never a silent drop;
    # embeddings need a model loaded for them.
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    refused = {
        "seed": {"seed": 1},
        "response_format": {"response_format": {"type": "json_object"}},
        "logprobs": {"logprobs": True},
        "tool_choice": {"tools": [weather], "tool_choice": "required"},
    }
    for param, extra in refused.items():
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="npu", messages=ASK, max_tokens=5, extra_body=extra)
        assert bad.value.param == param and "not supported" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as bad:
        client.embeddings.create(model="npu", input="hi")
    assert "embeddings" in str(bad.value)
    statuses = [
        row[2]
        for row in proxy.query("SELECT runtime_completion_tokens, completion_tokens, status FROM token_usage_events")
    ]
    assert statuses.count(400) == 5


def test_embeddings_through_proxy_and_rkllm_daemon(
    make_daemon: Callable[..., Daemon],
    make_proxy: Callable[..., Proxy],
    openai_client: Callable[..., OpenAI],
    fake_lib: Path,
    tmp_path: Path,
) -> None:
    """Issue 12: /v1/embeddings on the NPU path (last-hidden-layer runs of the stand-in), metered."""
    path = write_script(tmp_path / "embed.rkllm", ["unused"])
    env = {"LLMSERVER_RKLLM_DEVICE_CHECK": "off", "LLMSERVER_RKLLM_LIBRARY": str(fake_lib)}
    spec = f"npu-embed=rkllm:{path},target_platform=rk3588,embedding=true"
    daemon = make_daemon("--model", spec, env=env).start(ready_models=("npu-embed",))
    proxy = make_proxy(daemon.endpoint).start()
    client = openai_client(proxy.base_url, proxy.make_key("embed"))
    raw = client.embeddings.with_raw_response.create(model="npu-embed", input=["the cat sat", "quick brown fox"])
    r = raw.parse()
    assert [len(d.embedding) for d in r.data] == [16, 16]
    rows = proxy.query(
        "SELECT endpoint, prompt_tokens, completion_tokens, runtime_prompt_tokens, status FROM token_usage_events"
        " WHERE request_id = ?",
        (raw.headers["x-request-id"],),
    )
    assert rows == [("/v1/embeddings", r.usage.prompt_tokens, 0, len("the cat sat") + len("quick brown fox"), 200)]
