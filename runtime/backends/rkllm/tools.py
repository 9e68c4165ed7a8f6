"""Function tools on RKLLM: ``rkllm_set_function_tools`` and the calls in the model's answer.

RKLLM 1.2.1+ formats tools itself (the model's own tool template, e.g. Qwen2.5's): the binding
passes the system prompt, the tools as OpenAI's JSON array (``[{"type": "function", "function":
{...}}]``) and the tag that wraps tool results, once, before the run; the system prompt then
lives there instead of in the turn. The model answers either text or
``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; the text streams as usual while
``CallSniffer`` holds back only what could still be the start of a call. There is no grammar on the
NPU, so a call is validated after the fact: one that does not parse as JSON is an error, never
returned as if it were fine. ``tool_choice`` must be ``auto`` (the backend refuses the others).
"""

from __future__ import annotations

import json
from dataclasses import replace

from runtime.api.protocol import GenerateSpec
from runtime.backends.base import BackendError, Outcome
from runtime.backends.rkllm.chat import SYSTEM_ROLES
from runtime.backends.structured import CallSniffer, parse_call

TOOL_RESPONSE = "tool_response"  # the tag the model's template wraps tool results in
DEFAULT_SYSTEM = "You are a helpful assistant."


def function_tools(spec: GenerateSpec, default_system: str) -> tuple[str, str, str] | None:
    """The arguments of ``rkllm_set_function_tools`` for this request, or None without tools."""
    if not spec.output.calls_tools:
        return None
    messages = spec.messages or ()
    system = "\n\n".join(m["content"] for m in messages if m["role"] in SYSTEM_ROLES)
    tools = json.dumps(list(spec.output.tools), ensure_ascii=False, separators=(",", ":"))
    return system or default_system or DEFAULT_SYSTEM, tools, TOOL_RESPONSE


def without_system(spec: GenerateSpec) -> GenerateSpec:
    """The turn's messages once the system prompt went to ``rkllm_set_function_tools``."""
    if spec.messages is None:
        return spec
    return replace(spec, messages=tuple(m for m in spec.messages if m["role"] not in SYSTEM_ROLES))


def tool_outcome(outcome: Outcome, sniffer: CallSniffer | None) -> Outcome:
    """The run's outcome, with the call the model wrote (validated) if it wrote one."""
    if sniffer is None or not sniffer.calling or outcome.finish_reason == "aborted":
        return outcome
    text = sniffer.held().split("</tool_call>", 1)[0]
    complete = outcome.finish_reason != "length"
    try:
        call = parse_call(text, complete=complete)
    except BackendError:
        raise BackendError("the model's tool call is not valid JSON; the NPU runtime cannot constrain it") from None
    return replace(outcome, tool_calls=(call,), finish_reason="tool_calls" if complete else "length")
