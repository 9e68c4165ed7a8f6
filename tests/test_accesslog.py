"""One structured log line per request, JSON when asked, never a secret (issue 13).

The real proxy (``LLMSERVER_LOG_FORMAT=json``, ``LLMSERVER_LOG_LEVEL=DEBUG`` so that every line
it can write is written) in front of the shared daemon; its captured stderr is parsed line by line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx2 as httpx  # what the openai SDK itself uses
import openai
import pytest

from llmserver.logging import JsonFormatter
from tests.harness import Daemon, Proxy


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is JSON: a text line would fail here


def test_each_request_has_one_json_line_and_no_secret_is_logged(shared_daemon: Daemon, make_proxy: object) -> None:
    proxy: Proxy = make_proxy(  # type: ignore[operator]
        shared_daemon.endpoint, LLMSERVER_LOG_FORMAT="json", LLMSERVER_LOG_LEVEL="DEBUG"
    ).start()
    key = proxy.make_key("logged")
    client = openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    chat_id, usage = raw.headers["x-request-id"], raw.parse().usage
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True
    )
    for _ in stream:
        pass
    models = client.models.with_raw_response.list()
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")  # same public id, wrong secret
    refused = httpx.get(f"{proxy.base_url}/models", headers={"Authorization": f"Bearer {wrong}"})
    assert refused.status_code == 401
    client.close()
    proxy.stop()

    text = proxy.log_path.read_text()
    secret = key.rsplit("_", 1)[-1]
    assert key not in text and secret not in text and wrong.rsplit("_", 1)[-1] not in text
    lines = json_lines(proxy.log_path)
    access = [line for line in lines if line["logger"] == "proxy.accesslog"]
    by_id = {line["request_id"]: line for line in access}
    assert len(by_id) == len(access), "one line per request"
    chat = by_id[chat_id]
    assert usage is not None
    assert chat["status"] == 200 and chat["model"] == "smollm2" and chat["path"] == "/v1/chat/completions"
    assert chat["prompt_tokens"] == usage.prompt_tokens and chat["completion_tokens"] == usage.completion_tokens
    assert chat["latency_ms"] > 0 and chat["ttft_ms"] > 0 and isinstance(chat["key_id"], int)
    assert chat["time"] and chat["level"] == "INFO"
    streamed = [line for line in access if line["path"] == "/v1/chat/completions" and line["request_id"] != chat_id]
    assert len(streamed) == 1 and streamed[0]["ttft_ms"] <= streamed[0]["latency_ms"]
    listing = by_id[models.headers["x-request-id"]]
    assert listing["status"] == 200 and listing["key_id"] == chat["key_id"] and listing["model"] is None
    denied = by_id[refused.headers["x-request-id"]]
    assert denied["status"] == 401 and denied["key_id"] is None


def test_json_lines_carry_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed here" and "ValueError: boom" in line["exception"]
