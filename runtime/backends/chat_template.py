"""A model's chat template (Jinja, from its GGUF file), rendered within bounds of time, size and arguments.

The template travels inside the model file, so it is code from whoever made the file, run for every
chat request. Jinja's sandbox keeps it from touching the process, not from spinning: two nested
``range(100000)`` loops kept a core busy for hours, after the client had left and after the model
was stopped (issue 18). So rendering here, in the model's worker thread, is bounded:

- time and cancellation: the compiled template's own lines are traced (``sys.settrace`` for this
  thread, template code only, so the cost is one check per template line run): past
  ``RENDER_SECONDS``, or once the request is aborted (the client left, its deadline passed), the
  render stops with an exception at the next line;
- size: the prompt it writes may hold at most ``MAX_PROMPT_CHARS`` more than the conversation
  given to it; ``*`` and ``**`` and calls with integer arguments (``"x" * 10**10``,
  ``"".ljust(10**10)``) are bounded before they allocate.

The environment is the one llama-cpp-python's ``Jinja2ChatFormatter`` builds (and Transformers'):
``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, ``{% generation %}`` passed through, a ``tojson``
that keeps non-ASCII text, ``raise_exception`` and ``strftime_now``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from runtime.api.protocol import ERR_ABORTED
from runtime.backends.base import BackendError

RENDER_SECONDS = 10.0  # a real template renders in milliseconds
MAX_PROMPT_CHARS = 4 << 20  # what a template may add to the conversation it is given
MAX_INT_ARGUMENT = 1 << 20  # the largest count a template may pass to * or a call
_TEMPLATE_FILE = "<template>"  # the file name of code compiled from a string


class _Generation(jinja2.ext.Extension):
    """Pass-through for Hugging Face's ``{% generation %}`` chat-template tag."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with counts bounded before Python allocates what they ask."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_count(left if operator == "*" else 0)
        _check_count(right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _check_count(value)
        return super().call(context, obj, *args, **kwargs)


def _check_count(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
        raise SecurityError(f"the number {value} is larger than a chat template may use ({MAX_INT_ARGUMENT})")


@dataclass(frozen=True)
class Rendered:
    prompt: str
    stop: str  # the end-of-sequence text, a stop string


class ChatTemplate:
    """One model's template, compiled once, rendered once per request."""

    def __init__(self, source: str, eos_token: str, bos_token: str) -> None:
        env = _Sandbox(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_Generation, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        self._template = env.from_string(source)
        self.uses_tools = "tools" in source
        self._eos, self._bos = eos_token, bos_token

    def render(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, cancelled: Callable[[], bool]
    ) -> Rendered:
        context = {
            "messages": messages,
            "tools": tools,
            "functions": None,  # as Jinja2ChatFormatter passes them
            "function_call": None,
            "tool_choice": None,
            "eos_token": self._eos,
            "bos_token": self._bos,
            "add_generation_prompt": True,
            "raise_exception": _raise_exception,
            "strftime_now": _strftime_now,
        }
        budget = MAX_PROMPT_CHARS + len(json.dumps([messages, tools], ensure_ascii=False))
        try:
            with _Bounded(time.monotonic() + RENDER_SECONDS, cancelled):
                prompt = _join(self._template.generate(**context), budget)
        except _Stopped as stop:
            raise BackendError(stop.why, stop.code) from None
        except (jinja2.TemplateError, ValueError, TypeError, LookupError, RecursionError, MemoryError) as exc:
            raise BackendError(f"the model's chat template failed: {type(exc).__name__}: {exc}") from None
        return Rendered(prompt, self._eos)


def _join(pieces: Any, budget: int) -> str:
    out: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > budget:
            raise _Stopped(f"the model's chat template wrote more than {budget} characters")
        out.append(piece)
    return "".join(out)


class _Stopped(Exception):
    """Raised inside the template's code by the tracer (so the template cannot catch it as an error)."""

    def __init__(self, why: str, code: str = "backend_error") -> None:
        super().__init__(why)
        self.why, self.code = why, code


class _Bounded:
    """While active, this thread's template code checks the deadline and ``cancelled`` at every line."""

    def __init__(self, deadline: float, cancelled: Callable[[], bool]) -> None:
        self._deadline, self._cancelled = deadline, cancelled
        self._previous: Any = None

    def __enter__(self) -> None:
        self._previous = sys.gettrace()
        sys.settrace(self._call)

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self._previous)

    def _call(self, frame: FrameType, event: str, arg: Any) -> Any:
        return self._line if frame.f_code.co_filename == _TEMPLATE_FILE else None

    def _line(self, frame: FrameType, event: str, arg: Any) -> Any:
        if self._cancelled():
            raise _Stopped("aborted while the chat template was rendered", ERR_ABORTED)
        if time.monotonic() > self._deadline:
            raise _Stopped(f"the model's chat template did not finish in {RENDER_SECONDS:.0f} s")
        return self._line


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise ValueError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)
