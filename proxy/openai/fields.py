"""The request fields beyond text and sampling: tools, response_format, logprobs, and the rest.

Never a silent drop (issue 12). Every field of OpenAI's request bodies is in one of three places:

- parsed and honoured (here or in ``protocol``): tools, tool_choice, response_format, logprobs,
  top_logprobs, and the sampling fields;
- refused with a 400 naming it when set to something the server cannot do (``REFUSED``; ``n`` > 1
  and non-text content parts are refused in ``protocol``; a backend refuses what only it lacks,
  e.g. ``seed`` on RKLLM);
- accepted and ignored on purpose because they do not change the answer (``IGNORED``).

Anything else is an unknown extension: ignored, and listed in a debug log line so an operator can
see what a client sent that the server did not use.
"""

from __future__ import annotations

import logging
from typing import Any

from proxy.errors import bad_request
from runtime.api.output import MAX_TOP_LOGPROBS, OutputSpec, tool_call_schema
from runtime.api.schema import LIMITS, TOOL_CALL_LIMITS, SchemaError, SchemaLimits, check_schema, check_schemas, explain

log = logging.getLogger(__name__)
_SCHEMA = "invalid_json_schema"  # the error code of a schema the grammar compiler may not see

# Fields with no effect on the answer: accepted, not used.
IGNORED = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls", "safety_identifier"})
# Fields the server cannot honour: refused unless absent or at their neutral value.
REFUSED: dict[str, str] = {
    "logit_bias": "logit_bias is not supported",
    "functions": "the deprecated 'functions' is not supported; send 'tools'",
    "function_call": "the deprecated 'function_call' is not supported; send 'tool_choice'",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "reasoning_effort is not supported by these models",
    "suffix": "'suffix' (insertion) is not supported",
}
_CHAT = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "tools", "tool_choice", "response_format"}
    | {"logprobs", "top_logprobs", "modalities"}
)
_COMPLETION = frozenset({"model", "prompt", "max_tokens", "echo", "logprobs", "best_of"})
_SAMPLING = frozenset(
    {"n", "stream", "stream_options", "temperature", "top_p", "presence_penalty", "frequency_penalty"}
    | {"top_k", "min_p", "repeat_penalty", "stop", "seed"}
)


_KNOWN = {
    True: _CHAT | _SAMPLING | IGNORED | REFUSED.keys(),
    False: _COMPLETION | _SAMPLING | IGNORED | REFUSED.keys(),
}


def check_extra_fields(obj: dict[str, Any], chat: bool) -> None:
    """Refuse what cannot be honoured; log (debug) the unknown fields that are ignored."""
    for key in REFUSED.keys() & obj.keys():
        if obj[key] not in (None, {}, [], ""):
            raise bad_request(REFUSED[key], key, "unsupported_parameter")
    if chat and obj.get("modalities") not in (None, ["text"]):
        raise bad_request("only the text modality is supported", "modalities", "unsupported_parameter")
    if not chat and obj.get("best_of") not in (None, 1):
        raise bad_request("only best_of=1 is supported", "best_of", "unsupported_parameter")
    unknown = obj.keys() - _KNOWN[chat]
    if unknown:
        log.debug("ignored unknown request fields: %s", ", ".join(sorted(unknown)))


def parse_chat_output(obj: dict[str, Any]) -> OutputSpec:
    tools = _tools(obj.get("tools"))
    choice = _tool_choice(obj.get("tool_choice"), tools)
    spec = OutputSpec(tools, choice, _response_format(obj.get("response_format")), _chat_logprobs(obj))
    if spec.calls_tools:  # the functions together, as the grammar of one call holds them
        _check_schema(tool_call_schema(spec), "tools", TOOL_CALL_LIMITS)
    return spec


def _check_schema(schema: dict[str, Any], param: str, limits: SchemaLimits = LIMITS) -> None:
    """A schema the grammar compiler will see: within ``runtime.api.schema.LIMITS`` or a 400 (issue 18)."""
    try:
        check_schema(schema, limits)
    except SchemaError as exc:
        raise bad_request(explain(exc, param)[1], param, _SCHEMA) from None


def parse_completion_output(obj: dict[str, Any]) -> OutputSpec:
    value = obj.get("logprobs")
    if value is None:
        return OutputSpec()
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
        raise bad_request("'logprobs' must be an integer between 0 and 5", "logprobs")
    return OutputSpec(logprobs=value)


def _tools(value: Any) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_request("'tools' must be an array of tools", "tools")
    if len(value) > LIMITS.tools:
        raise bad_request(f"'tools' may hold at most {LIMITS.tools} functions", "tools")
    out = tuple(_tool(i, tool) for i, tool in enumerate(value))
    try:
        check_schemas([t["function"]["parameters"] for t in out])
    except SchemaError as exc:
        param, message = explain(exc, "tools")
        raise bad_request(message, param, _SCHEMA) from None
    return out


def _tool(i: int, tool: Any) -> dict[str, Any]:
    param = f"tools[{i}]"
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise bad_request(f"{param}: only tools of type 'function' are supported", param)
    fn = tool["function"]
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise bad_request(f"{param}.function.name is required", f"{param}.function.name")
    parameters = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise bad_request(f"{param}.function.parameters must be a JSON schema object", param)
    kept = {"name": fn["name"], "parameters": parameters}
    if isinstance(fn.get("description"), str):
        kept["description"] = fn["description"]
    return {"type": "function", "function": kept}


def _tool_choice(value: Any, tools: tuple[dict[str, Any], ...]) -> str | dict[str, str]:
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        if value == "required" and not tools:
            raise bad_request("tool_choice 'required' needs 'tools'", "tool_choice")
        return str(value)
    name = value.get("function", {}).get("name") if isinstance(value, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(name, str):
        raise bad_request(
            '\'tool_choice\' must be auto, none, required or {"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if name not in {t["function"]["name"] for t in tools}:
        raise bad_request(f"tool_choice names the function {name!r}, which is not in 'tools'", "tool_choice")
    return {"name": name}


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise bad_request("response_format.json_schema needs a 'name'", "response_format.json_schema")
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise bad_request("response_format.json_schema.schema must be an object", "response_format.json_schema")
        _check_schema(schema, "response_format")
        return {"type": "json_schema", "schema": schema}
    raise bad_request("response_format.type must be text, json_object or json_schema", "response_format")


def _chat_logprobs(obj: dict[str, Any]) -> int | None:
    wanted, top = obj.get("logprobs"), obj.get("top_logprobs")
    if wanted not in (None, True, False):
        raise bad_request("'logprobs' must be a boolean", "logprobs")
    if top is not None:
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise bad_request(f"'top_logprobs' must be an integer between 0 and {MAX_TOP_LOGPROBS}", "top_logprobs")
        if wanted is not True:
            raise bad_request("'top_logprobs' needs logprobs=true", "top_logprobs")
    return (top or 0) if wanted else None
