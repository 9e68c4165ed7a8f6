"""Parse and validate the bodies of ``/v1/chat/completions`` and ``/v1/completions``.

Known fields are type-checked and bounded, and every problem is a 400 naming its ``param``;
what cannot be honoured is refused, never dropped, and unknown extensions are ignored with a debug
log line (``fields``). Tools, response_format and logprobs are parsed in ``fields``.
Sampling: OpenAI's ``temperature``, ``top_p``, ``presence_penalty``,
``frequency_penalty``, ``stop``, ``seed``, and llama.cpp server's extensions
``top_k``, ``min_p`` and ``repeat_penalty``.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.errors import bad_request
from proxy.metering.request import GenerationRequest, check_model_length
from proxy.openai.fields import check_extra_fields, parse_chat_output, parse_completion_output
from runtime.api.protocol import MAX_STOP_STRINGS, SAMPLING_BOUNDS, SamplingParams

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_RUNTIME = SamplingParams()


def parse_chat(body: Any, default_max: int, limit: int) -> GenerationRequest:
    obj = _object(body)
    model = _model(obj)
    check_extra_fields(obj, chat=True)
    messages = tuple(_message(m, i) for i, m in enumerate(_list(obj, "messages")))
    if not messages:
        raise bad_request("'messages' must contain at least one message", "messages")
    max_tokens = _max_tokens(obj, "max_completion_tokens", default_max, limit)
    if "max_completion_tokens" not in obj:
        max_tokens = _max_tokens(obj, "max_tokens", default_max, limit)
    return GenerationRequest(
        model=model,
        messages=messages,
        prompt=None,
        max_tokens=max_tokens,
        output=parse_chat_output(obj),
        **_sampling(obj),
    )


def parse_completion(body: Any, default_max: int, limit: int) -> GenerationRequest:
    obj = _object(body)
    check_extra_fields(obj, chat=False)
    prompt = obj.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad_request("'prompt' must be a string (batched prompts are not supported)", "prompt")
    if not prompt:  # found by fuzzing: an empty prompt crashed the backend (502)
        raise bad_request("'prompt' must not be empty", "prompt")
    echo = obj.get("echo", False)
    if not isinstance(echo, bool):
        raise bad_request("'echo' must be a boolean", "echo")
    return GenerationRequest(
        model=_model(obj),
        messages=None,
        prompt=prompt,
        max_tokens=_max_tokens(obj, "max_tokens", default_max, limit),
        echo=echo,
        output=parse_completion_output(obj),
        **_sampling(obj),
    )


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def _model(obj: dict[str, Any]) -> str:
    model = obj.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a string", "model")
    return check_model_length(model)


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise bad_request(f"'{key}' is required and must be an array", key)
    return value


def _message(m: Any, i: int) -> dict[str, Any]:
    param = f"messages[{i}]"
    if not isinstance(m, dict):
        raise bad_request(f"{param} must be an object", param)
    role = m.get("role")
    if not isinstance(role, str) or role not in _ROLES:  # a list is unhashable (found by fuzzing: a 500)
        raise bad_request(f"{param}.role must be one of {', '.join(sorted(_ROLES))}", f"{param}.role")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role}
    out["content"] = _content(m.get("content"), param)
    if role == "assistant" and m.get("tool_calls") is not None:
        out["tool_calls"] = _tool_calls(m["tool_calls"], f"{param}.tool_calls")
    if role == "tool":
        if not isinstance(m.get("tool_call_id"), str):
            raise bad_request(f"{param}.tool_call_id is required for a tool message", f"{param}.tool_call_id")
        out["tool_call_id"] = m["tool_call_id"]
    if isinstance(m.get("name"), str):
        out["name"] = m["name"]
    return out


def _tool_calls(calls: Any, param: str) -> list[dict[str, Any]]:
    """An assistant's earlier calls, sent back with their results: kept as OpenAI wrote them."""
    if not isinstance(calls, list):
        raise bad_request(f"{param} must be an array", param)
    out = []
    for n, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
            raise bad_request(f"{param}[{n}] needs function.name and function.arguments (a string)", f"{param}[{n}]")
        out.append(
            {
                "id": str(call.get("id", "")),
                "type": "function",
                "function": {"name": fn["name"], "arguments": fn["arguments"]},
            }
        )
    return out


def _content(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("image_url", "input_audio", "file"):
                raise bad_request(
                    f"{param}.content: {kind} parts are not supported; this server's models take text only",
                    f"{param}.content",
                    "unsupported_content",
                )
            if kind != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{param}.content: only text parts are supported", f"{param}.content")
            parts.append(part["text"])
        return "".join(parts)
    raise bad_request(f"{param}.content must be a string or an array of text parts", f"{param}.content")


def _max_tokens(obj: dict[str, Any], key: str, default: int, limit: int) -> int:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_request(f"'{key}' must be a positive integer", key)
    if value > limit:
        raise bad_request(f"'{key}' is {value}; the maximum is {limit}", key, "max_tokens_too_large")
    return value


def _sampling(obj: dict[str, Any]) -> dict[str, Any]:
    n = obj.get("n", 1)
    if n != 1 or isinstance(n, bool):
        raise bad_request("only n=1 is supported", "n")
    stream = obj.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "stream")
    options = obj.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        raise bad_request("'stream_options' is an object, allowed only with stream=true", "stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    return {
        # OpenAI's own fields default to OpenAI's values; llama.cpp's extensions to the runtime's.
        "temperature": _bounded(obj, "temperature", 1.0),
        "top_p": _bounded(obj, "top_p", 1.0),
        "presence_penalty": _bounded(obj, "presence_penalty", 0.0),
        "frequency_penalty": _bounded(obj, "frequency_penalty", 0.0),
        "top_k": int(_bounded(obj, "top_k", _RUNTIME.top_k)),
        "min_p": _bounded(obj, "min_p", _RUNTIME.min_p),
        "repeat_penalty": _bounded(obj, "repeat_penalty", _RUNTIME.repeat_penalty),
        "stop": _stop(obj.get("stop")),
        "seed": _seed(obj.get("seed")),
        "stream": stream,
        "include_usage": include_usage,
    }


def _bounded(obj: dict[str, Any], key: str, default: float) -> float:
    """A sampling field within the runtime protocol's bounds (``SAMPLING_BOUNDS``), or a 400 naming it."""
    value = obj.get(key)
    if value is None:
        return default
    bound = SAMPLING_BOUNDS[key]
    if not bound.admits(value):
        raise bad_request(f"'{key}' must be {bound.describe()}", key)
    return float(value) if not bound.integer else int(value)


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in value):
        raise bad_request(f"'stop' must be a string or an array of up to {MAX_STOP_STRINGS} non-empty strings", "stop")
    return tuple(value)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request("'seed' must be an integer", "seed")
    return value


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(
    request_id: str,
    model: str,
    text: str,
    reason: str,
    prompt: int,
    completion: int,
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["content"] = text or None
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-" + request_id.removeprefix("req_"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reason}],
        "usage": usage(prompt, completion),
    }


def text_completion(
    request_id: str, model: str, text: str, reason: str, prompt: int, completion: int, logprobs: Any = None
) -> dict[str, Any]:
    return {
        "id": "cmpl-" + request_id.removeprefix("req_"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}],
        "usage": usage(prompt, completion),
    }
