"""Clients for the fault, fuzz and load tests: a streamed chat as raw SSE events, and a proxy's memory."""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

SOAK = os.environ.get("LLMSERVER_SOAK") == "1"  # `make soak`: the long versions


def scaled(short: float, long: float) -> float:
    return long if SOAK else short


@dataclass
class Streamed:
    """What one streamed chat completion delivered to its client."""

    status: int = 0
    id: str | None = None
    text: str = ""
    usage: dict[str, int] | None = None
    error: dict[str, object] | None = None
    done: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    error_at: float | None = None  # monotonic time of the error event

    @property
    def request_id(self) -> str | None:
        return "req_" + self.id.removeprefix("chatcmpl-") if self.id else None


def stream_chat(
    base_url: str,
    key: str,
    *,
    content: str = "Count from 1 to 100.",
    max_tokens: int = 64,
    model: str = "smollm2",
    timeout: float = 60,
    after_chunk: object = None,
) -> Streamed:
    """POST a streamed chat completion with usage; every event is recorded (``after_chunk(result)``
    is called after each text chunk)."""
    result = Streamed()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    parsed = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request(
            "POST",
            f"{parsed.path}/chat/completions",
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        result.status = response.status
        result.headers = {k.lower(): v for k, v in response.getheaders()}
        if response.status != 200:
            result.error = json.loads(response.read() or b"{}").get("error")
            return result
        _read_events(response, result, after_chunk)
    except (OSError, http.client.HTTPException) as exc:  # the connection broke: no clean end
        result.error = result.error or {"message": f"connection: {exc}"}
    finally:
        conn.close()
    return result


def _read_events(response: http.client.HTTPResponse, result: Streamed, after_chunk: object) -> None:
    while line := response.readline():
        if not line.startswith(b"data: "):
            continue
        data = line[len(b"data: ") :].strip()
        if data == b"[DONE]":
            result.done = True
            return
        obj = json.loads(data)
        if "error" in obj:
            result.error, result.error_at = obj["error"], time.monotonic()
            continue
        result.id = obj.get("id", result.id)
        if obj.get("usage"):
            result.usage = obj["usage"]
        for choice in obj.get("choices", []):
            piece = choice.get("delta", {}).get("content") or ""
            result.text += piece
            if piece and callable(after_chunk):
                after_chunk(result)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")
