"""The structured parts of an answer in OpenAI's shapes: tool calls and log-probabilities.

The runtime reports calls as ``{"name", "arguments"}`` and log-probabilities as one entry per
generated token (``runtime.api.output``); OpenAI's chat API wants calls with ids and
``{"content": [...]}`` log-probabilities, its completions API the older
``tokens``/``token_logprobs``/``top_logprobs``/``text_offset`` columns.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

ARGUMENT_FRAGMENT = 16  # characters of arguments per streamed chunk, as OpenAI streams them in pieces


def tool_call_objects(calls: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    return [{"id": "call_" + secrets.token_hex(12), "type": "function", "function": dict(call)} for call in calls]


def tool_call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Streamed calls: for each, the id, type and name with empty arguments, then the arguments in pieces."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        fn = call["function"]
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": fn["name"], "arguments": ""}}
        deltas.append({"tool_calls": [head]})
        args = fn["arguments"]
        for at in range(0, len(args), ARGUMENT_FRAGMENT):
            piece = {"index": index, "function": {"arguments": args[at : at + ARGUMENT_FRAGMENT]}}
            deltas.append({"tool_calls": [piece]})
    return deltas


def chat_logprobs(entries: Sequence[dict[str, Any]] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    content = [
        {
            "token": e["token"],
            "logprob": e["logprob"],
            "bytes": e["bytes"],
            "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": t["bytes"]} for t in e["top"]],
        }
        for e in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: Sequence[dict[str, Any]] | None, offset: int) -> dict[str, Any] | None:
    """The completions API's columns; ``offset``: where the generated text starts in ``text``."""
    if entries is None:
        return None
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top"]} for e in entries],
        "text_offset": offsets,
    }
