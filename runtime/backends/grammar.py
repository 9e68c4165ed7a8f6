"""The grammar path: a request's output spec -> GBNF text -> a grammar llama.cpp accepts, or a 400.

llama-cpp-python hands a grammar to ``llama_sampler_init_grammar`` only when sampling starts, and
uses what comes back without looking: a grammar llama.cpp refuses (too many nested repetitions, left
recursion, an empty alternative list) is a NULL sampler and a SIGSEGV that takes every model of the
daemon down (issue 18). So every grammar passes four gates here, each a ``BackendError`` with code
``bad_request`` and the request field at fault (the proxy answers 400 naming it):

1. the schema is within ``runtime.api.schema.LIMITS`` (the proxy checked it too; this daemon may
   have other clients);
2. the converter (``json_schema_to_gbnf``) can write it: it reports what it does not support with
   assertions, key and type errors, so any exception there is the schema's problem;
3. the GBNF text is within the table's size and nesting (llama.cpp's parser recurses once per
   nested group);
4. llama.cpp itself compiles it here, once, and says whether it accepts it (``compile_grammar``).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from runtime.api.output import OutputSpec, tool_call_schema
from runtime.api.protocol import ERR_BAD_REQUEST
from runtime.api.schema import (
    LIMITS,
    NUL_ESCAPE,
    NUL_PROBLEM,
    TOOL_CALL_LIMITS,
    SchemaError,
    SchemaLimits,
    check_schema,
    check_schemas,
    explain,
)
from runtime.backends.base import BackendError

# What may hold a parenthesis that is not a group: string literals, character classes, comments.
_NOT_GROUPS = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|#[^\n]*', re.DOTALL)
# The same, with string literals captured (a '"' inside a character class starts none).
_LITERALS = re.compile(r'("(?:[^"\\]|\\.)*")|\[(?:[^\]\\]|\\.)*\]|#[^\n]*', re.DOTALL)


def output_grammar(output: OutputSpec) -> str | None:
    """The GBNF text that constrains this request's answer, or None for free text."""
    from llama_cpp.llama_grammar import JSON_GBNF

    if output.calls_tools:  # auto: the caller asks again with "required" once the model chose to call
        check_tools(output)
        return schema_grammar(tool_call_schema(output), "tools", TOOL_CALL_LIMITS)
    fmt = output.response_format
    if fmt is None:
        return None
    if fmt["type"] == "json_object":
        return JSON_GBNF.replace("root   ::= value", "root   ::= object", 1)
    return schema_grammar(fmt["schema"], "response_format")


def check_tools(output: OutputSpec) -> None:
    """Each function's ``parameters`` on its own (the messages name the function), and their number."""
    if len(output.tools) > LIMITS.tools:
        raise BackendError(f"tools: at most {LIMITS.tools} functions are allowed", ERR_BAD_REQUEST, "tools")
    try:
        check_schemas([tool["function"].get("parameters") or {"type": "object"} for tool in output.tools])
    except SchemaError as exc:
        param, message = explain(exc, "tools")
        raise BackendError(message, ERR_BAD_REQUEST, param) from None


def schema_grammar(schema: dict[str, Any], param: str, limits: SchemaLimits = LIMITS) -> str:
    """``schema`` as GBNF, after gates 1-3."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        check_schema(schema, limits)
    except SchemaError as exc:
        raise BackendError(explain(exc, param)[1], ERR_BAD_REQUEST, param) from None
    try:
        gbnf = str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter's way of saying "unsupported": assert, KeyError, TypeError...
        raise BackendError(
            f"{param}: the JSON schema cannot be enforced ({type(exc).__name__}: {exc})", ERR_BAD_REQUEST, param
        ) from None
    check_grammar(gbnf, param)
    return gbnf


def check_grammar(gbnf: str, param: str) -> None:
    """Gate 3: the grammar's size and group nesting within the table's bounds."""
    if len(gbnf) > LIMITS.grammar_chars:
        raise BackendError(
            f"{param}: the grammar for this schema is {len(gbnf)} characters; this server's limit is "
            f"{LIMITS.grammar_chars}",
            ERR_BAD_REQUEST,
            param,
        )
    if "\x00" in gbnf or any(NUL_ESCAPE.search(m[1]) for m in _LITERALS.finditer(gbnf) if m[1]):
        # The converter writes a JSON escape such as "\u0000" unescaped into GBNF, where it means U+0000.
        raise BackendError(f"{param}: {NUL_PROBLEM}", ERR_BAD_REQUEST, param)
    depth = grammar_depth(gbnf)
    if depth > LIMITS.grammar_depth:
        raise BackendError(
            f"{param}: the grammar for this schema nests {depth} groups; this server's limit is {LIMITS.grammar_depth}",
            ERR_BAD_REQUEST,
            param,
        )


def grammar_depth(gbnf: str) -> int:
    """The deepest nesting of ``( )`` groups in GBNF text."""
    parens = (1 if c == "(" else -1 for c in _NOT_GROUPS.sub("", gbnf) if c in "()")
    return max(accumulate(parens), default=0)


def compile_grammar(gbnf: str, vocab: Any, param: str) -> Any:
    """Gate 4: a ``LlamaGrammar`` for ``gbnf``, once llama.cpp has compiled it here and accepted it."""
    import llama_cpp
    from llama_cpp import LlamaGrammar

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        raise BackendError(
            f"{param}: llama.cpp cannot compile the grammar for this schema (too many nested repetitions, "
            "or a rule that refers to itself before writing anything)",
            ERR_BAD_REQUEST,
            param,
        )
    llama_cpp.llama_sampler_free(sampler)
    return LlamaGrammar.from_string(gbnf, verbose=False)
