"""What a ``generate`` asks of its output beyond text: tools, a response format, log-probabilities.

On the wire this is the optional ``output`` object of a ``generate`` request (absent = plain text)::

    "output": {"tools": [<OpenAI tool object>...], "tool_choice": "auto" | "none" | "required" | {"name": N},
               "response_format": {"type": "json_object"} | {"type": "json_schema", "schema": {...}},
               "logprobs": <0..20, how many alternatives per token; absent = none>}

and its results travel in the ``done`` frame: ``tool_calls`` (``[{"name", "arguments"}]``, arguments
a JSON string) and ``logprobs`` (one entry per generated token: ``{"token", "logprob", "bytes",
"top": [{"token", "logprob", "bytes"}...]}``). A backend that cannot honour a field refuses the
request with ``bad_request`` and a message naming the field; it never ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_TOP_LOGPROBS = 20


class OutputSpecError(ValueError):
    """An ``output`` object that is not valid protocol."""


@dataclass(frozen=True)
class OutputSpec:
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, str] = "auto"
    response_format: dict[str, Any] | None = None
    logprobs: int | None = None

    @property
    def plain(self) -> bool:
        return not self.tools and self.response_format is None and self.logprobs is None

    @property
    def calls_tools(self) -> bool:
        """Whether the model may answer with a tool call."""
        return bool(self.tools) and self.tool_choice != "none"

    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]


def output_to_wire(spec: OutputSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.tools:
        out["tools"] = list(spec.tools)
        out["tool_choice"] = spec.tool_choice
    if spec.response_format is not None:
        out["response_format"] = spec.response_format
    if spec.logprobs is not None:
        out["logprobs"] = spec.logprobs
    return out


def parse_output(raw: Any) -> OutputSpec:
    if raw is None:
        return OutputSpec()
    if not isinstance(raw, dict):
        raise OutputSpecError("'output' must be an object")
    tools = raw.get("tools") or []
    if not isinstance(tools, list) or not all(_is_tool(t) for t in tools):
        raise OutputSpecError("'output.tools' must be a list of function tools with a name")
    choice = raw.get("tool_choice", "auto")
    names = {t["function"]["name"] for t in tools}
    if isinstance(choice, dict):
        if choice.get("name") not in names:
            raise OutputSpecError("'output.tool_choice' names a function that is not in 'tools'")
        choice = {"name": choice["name"]}
    elif choice not in ("auto", "none", "required"):
        raise OutputSpecError("'output.tool_choice' must be auto, none, required or {\"name\": ...}")
    fmt = raw.get("response_format")
    if fmt is not None and not _is_format(fmt):
        raise OutputSpecError("'output.response_format' must be json_object or json_schema with a schema")
    top = raw.get("logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise OutputSpecError(f"'output.logprobs' must be an integer in [0, {MAX_TOP_LOGPROBS}]")
    return OutputSpec(tuple(tools), choice, fmt, top)


def _is_tool(tool: Any) -> bool:
    fn = tool.get("function") if isinstance(tool, dict) else None
    return isinstance(fn, dict) and isinstance(fn.get("name"), str) and bool(fn["name"])


def _is_format(fmt: Any) -> bool:
    if not isinstance(fmt, dict):
        return False
    if fmt.get("type") == "json_object":
        return True
    return fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict)


def tool_call_schema(spec: OutputSpec) -> dict[str, Any]:
    """The JSON schema of one call of one of the allowed functions: ``{"name": ..., "arguments": {...}}``.

    A function's ``parameters`` sit under ``arguments`` here, so their local references (``#/$defs/X``,
    as pydantic writes them) are rewritten to point where they now are.
    """
    tools = spec.tools
    if isinstance(spec.tool_choice, dict):
        tools = tuple(t for t in tools if t["function"]["name"] == spec.tool_choice["name"])
    single = len(tools) == 1
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": _rebase(
                    t["function"].get("parameters") or {"type": "object"},
                    "#/properties/arguments" if single else f"#/anyOf/{i}/properties/arguments",
                ),
            },
            "required": ["name", "arguments"],
        }
        for i, t in enumerate(tools)
    ]
    return options[0] if single else {"anyOf": options}


def _rebase(value: Any, prefix: str) -> Any:
    """``value`` with every local ``$ref`` (``#/...``) moved under ``prefix``."""
    if isinstance(value, list):
        return [_rebase(v, prefix) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _rebase(v, prefix) for k, v in value.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
        out["$ref"] = prefix + ref[1:]
    return out
