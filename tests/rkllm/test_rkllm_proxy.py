"""End to end on the NPU path: the daemon on the rkllm backend (stand-in library) behind the real
proxy answers the official openai client, streamed and not, with usage (issue 4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
