"""One structured log line per request, JSON when asked, never a secret (issue 13).

The real proxy (``LLMSERVER_LOG_FORMAT=json``, ``LLMSERVER_LOG_LEVEL=DEBUG`` so that every line
it can write is written) in front of the shared daemon; its captured stderr is parsed line by line.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import httpx2 as httpx  # what the openai SDK itself uses
import openai
import pytest

from llmserver.logging import TEXT_FORMAT, JsonFormatter
from proxy import accesslog
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


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_buffered_sink_writes_what_the_logging_formatter_would(log_format: str) -> None:
    """The serving commands' access lines skip the logging machinery (its cost per request); they must
    still be the very lines the configured formatter writes for the same record."""
    fields = {"request_id": "req_1", "method": "GET", "path": "/v1/models", "status": 200, "latency_ms": 0.42}
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    sink = accesslog.LineSink(io.StringIO(), log_format)
    for created in (1_764_450_000.0, 1_764_450_000.999, 1_764_453_601.5004):
        record = logging.LogRecord("proxy.accesslog", logging.INFO, __file__, 1, "GET /v1/models 200", None, None)
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        record.fields = fields
        assert sink.format(created, logging.INFO, "GET /v1/models 200", fields) == formatter.format(record) + "\n"


@pytest.mark.asyncio
async def test_buffered_lines_go_out_within_the_flush_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.accesslog")
    stream = io.StringIO()
    sink = accesslog.LineSink(stream, "text")
    previous = accesslog._sink
    accesslog.use_sink(sink)
    try:
        accesslog.log_request(request_id="req_a", method="GET", path="/v1/models", status=200, latency_ms=0.3)
        assert stream.getvalue() == ""  # buffered
        await asyncio.sleep(accesslog.FLUSH_SECONDS * 3)
        assert "GET /v1/models 200 request=req_a" in stream.getvalue()
        for i in range(accesslog.FLUSH_LINES):  # a full buffer goes out at once
            accesslog.log_request(request_id=f"req_{i}", method="GET", path="/v1/models", status=200, latency_ms=0.3)
        assert stream.getvalue().count("\n") == 1 + accesslog.FLUSH_LINES
        assert not caplog.records  # none went through logging as well
        caplog.set_level(logging.WARNING, logger="proxy.accesslog")
        accesslog.log_request(request_id="req_quiet", method="GET", path="/v1/models", status=200, latency_ms=0.3)
        accesslog.flush()
        assert "req_quiet" not in stream.getvalue()  # the level still rules
    finally:
        accesslog.use_sink(previous)
