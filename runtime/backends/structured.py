"""Tools, JSON output and log-probabilities for llama.cpp: grammars, tool prompts, call parsing.

Output that must parse is constrained while it is sampled, with llama.cpp's GBNF grammars
(``llama_cpp.LlamaGrammar``): a token the grammar does not allow is never chosen, so even the
135M demo model writes JSON that parses and matches the schema.

- ``response_format`` ``json_object``: llama.cpp's JSON grammar with an object at the root;
  ``json_schema``: the schema compiled to a grammar (``runtime.backends.grammar``, which also
  bounds what a schema may ask).
- tools, ``tool_choice`` ``required`` or a named function: the whole answer is one call,
  ``{"name": ..., "arguments": {...}}``, the arguments constrained by the function's schema.
- tools, ``auto``: the model writes freely (no grammar: free text under one would slow every token);
  :class:`CallSniffer` holds text back only while it could still be the start of ``<tool_call>``, so
  a text answer streams as usual. If the model does begin a call, that pass stops and the call is
  sampled again after the tag, under the call grammar.

Tools reach the model through its own chat template when the template uses ``tools`` (the
template then formats them as the model was trained to see them); otherwise a system message
lists the functions and the ``<tool_call>`` convention. Earlier calls and ``tool`` results in the
conversation are rendered the same way.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from runtime.api.output import OutputSpec
from runtime.backends.base import BackendError, Emit

CALL_TAG = "<tool_call>"
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
_ARGS = re.compile(r'"arguments"\s*:\s*')


def template_messages(messages: tuple[dict[str, Any], ...], output: OutputSpec, native: bool) -> list[dict[str, Any]]:
    """The conversation as the chat template gets it; with a tools prompt unless ``native``."""
    out = [_render(m, native) for m in messages]
    if not output.calls_tools or native:
        return out
    prompt = tools_prompt(output)
    if out and out[0]["role"] == "system":
        out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
    else:
        out.insert(0, {"role": "system", "content": prompt})
    return out


def _render(m: dict[str, Any], native: bool) -> dict[str, Any]:
    if native:
        return dict(m)
    calls = m.get("tool_calls")
    if m["role"] == "assistant" and calls:
        text = "".join(f"{CALL_TAG}{_call_text(c)}</tool_call>" for c in calls)
        return {"role": "assistant", "content": (m["content"] + text) if m["content"] else text}
    return {"role": m["role"], "content": m["content"]}


def _call_text(call: Any) -> str:
    fn = call.get("function", {}) if isinstance(call, dict) else {}
    arguments = fn.get("arguments", "{}")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        parsed = arguments
    return json.dumps({"name": fn.get("name", ""), "arguments": parsed}, ensure_ascii=False)


def tools_prompt(output: OutputSpec) -> str:
    functions = [t["function"] for t in output.tools]
    listing = "\n".join(json.dumps(f, ensure_ascii=False) for f in functions)
    return (
        "You can call these functions:\n"
        f"{listing}\n"
        f'To call one, answer with {CALL_TAG}{{"name": <function name>, "arguments": <arguments object>}}'
        " and nothing else. Answer the user directly when no call is needed."
    )


def parse_call(text: str, complete: bool) -> dict[str, str]:
    """A call the grammar produced -> ``{"name", "arguments"}`` (arguments as JSON text).

    A call cut short by ``max_tokens`` (not ``complete``) keeps the arguments written so far, as
    OpenAI returns them with ``finish_reason: length``.
    """
    body = text.strip()
    if body.startswith(CALL_TAG):
        body = body[len(CALL_TAG) :].strip()
    if not complete:
        name, args = _NAME.search(body), _ARGS.search(body)
        return {"name": name.group(1) if name else "", "arguments": body[args.end() :] if args else ""}
    try:
        call = json.loads(body)
    except ValueError as exc:
        raise BackendError(f"the model's tool call is not valid JSON ({exc})") from None
    return {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}


class CallSniffer:
    """An ``emit`` in front of the real one for ``tool_choice: auto``: text goes on unless it is a call."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._held: list[str] = []
        self.calling = False
        self.decided = False

    def __call__(self, text: str, final: bool = False) -> None:
        if self.decided:
            if self.calling:
                self._held.append(text)
            else:
                self._pass(text, final)
            return
        self._held.append(text)
        so_far = "".join(self._held)
        if so_far.startswith(CALL_TAG) or CALL_TAG.startswith(so_far):
            self.calling = so_far.startswith(CALL_TAG)
            self.decided = self.calling
            return
        self.decided = True
        self._held.clear()
        self._pass(so_far, final)

    def _pass(self, text: str, final: bool) -> None:
        if final:
            self._emit(text, final=True)
        else:
            self._emit(text)

    def held(self) -> str:
        return "".join(self._held)


def token_logprobs(logits: Any, token: int, top: int, piece: Any) -> dict[str, Any]:
    """The model's log-probability of ``token`` and of its ``top`` best alternatives, from raw logits."""
    import numpy as np

    shifted = logits - np.max(logits)
    logsum = math.log(float(np.sum(np.exp(shifted))))
    entry = _entry(piece(token), float(shifted[token]) - logsum)
    if top:
        best = np.argpartition(-shifted, top)[:top]
        best = best[np.argsort(-shifted[best])]
        entry["top"] = [_entry(piece(int(t)), float(shifted[t]) - logsum) for t in best]
    else:
        entry["top"] = []
    return entry


def _entry(raw: bytes, logprob: float) -> dict[str, Any]:
    return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}
