"""What an output JSON schema may ask: one table of limits and one validator, for the proxy and the daemon.

A ``response_format`` schema or a tool's ``parameters`` becomes a llama.cpp grammar (GBNF). The
converter spells a count out: ``maxLength: n`` is ``n`` nested optional groups, ``pattern``
``a{0,n}`` the same, ``maxItems`` too. llama.cpp (the version pinned in setup.cfg) refuses a
grammar whose groups hold more than 2,000 synthesized rules (``MAX_REPETITION_THRESHOLD``: about
1,050 nested repetitions), refuses left recursion and an empty ``enum``, and then returns no
sampler at all, which llama-cpp-python uses anyway: SIGSEGV, the whole daemon gone (issue 18). Its
parser also recurses once per nested group and overflows an 8 MB stack between 10,000 and 20,000.
So the proxy refuses (400, naming the limit) what a schema may not ask, before a token is spent,
and the daemon checks the same table again (another client may reach it directly), measures the
grammar it made, and asks llama.cpp whether it accepts it before sampling with it.

The limits (``LIMITS``) leave a factor of two below the first count llama.cpp refuses, and keep a
grammar's compile time in milliseconds. ``check_schema`` costs at most ``nodes`` steps, whatever
the size of what it is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems")
_UNIONS = ("anyOf", "oneOf", "allOf")
# U+0000 in a grammar is a character no token can write: llama.cpp rejects every token, samples one
# anyway and throws from C++ (std::terminate, the daemon gone).
NUL_PROBLEM = "the character U+0000 cannot be generated; a schema may not ask for it"
NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\(?:x00|u0000|U00000000|0(?![0-9]))")  # in a pattern or GBNF


@dataclass(frozen=True)
class SchemaLimits:
    """The one table of what an output schema may ask (README: structured output)."""

    depth: int = 32  # nesting of the schema document (objects and arrays)
    nodes: int = 10_000  # objects, arrays and values in the schema document
    chars: int = 100_000  # characters of every key and string in it together
    repeat: int = 500  # one count: minLength, maxLength, minItems, maxItems, a pattern's {m,n}
    total_repeat: int = 5_000  # all counts and patterns of one schema together
    enum: int = 500  # values of one enum
    properties: int = 256  # properties of one object
    pattern: int = 1_000  # characters of one pattern
    pattern_depth: int = 16  # nested groups in one pattern
    tools: int = 128  # functions in one request
    grammar_chars: int = 2_000_000  # the daemon's check of the grammar it made: characters
    grammar_depth: int = 1_024  # ... and nested groups


LIMITS = SchemaLimits()
# The schema of one tool call (``runtime.api.output.tool_call_schema``) holds each function's parameters
# 4 levels down (anyOf, its index, properties, arguments) beside a few nodes and its name of its own.
TOOL_CALL_LIMITS = replace(
    LIMITS, depth=LIMITS.depth + 4, nodes=LIMITS.nodes + 16 * LIMITS.tools, chars=LIMITS.chars + 128 * LIMITS.tools
)


class SchemaError(ValueError):
    """A schema that is malformed or asks more than ``LIMITS``; the message names where and why."""

    def __init__(self, pointer: str, problem: str, index: int = 0) -> None:
        super().__init__(f"{pointer or '/'}: {problem}")
        self.pointer = pointer
        self.problem = problem
        self.index = index  # which of several schemas (``check_schemas``), -1 for all of them


def check_schema(schema: Any, limits: SchemaLimits = LIMITS) -> tuple[int, int]:
    """Raise :class:`SchemaError` unless ``schema`` is a JSON schema within ``limits``; its nodes and
    characters (for a budget over several schemas: see ``check_schemas``)."""
    if not isinstance(schema, dict):
        raise SchemaError("", "a schema must be a JSON object")
    size = check_size(schema, limits)
    checker = _Checker(schema, limits)
    checker.visit(schema, "")
    checker.check_refs()
    return size


def check_schemas(schemas: list[Any], limits: SchemaLimits = LIMITS) -> None:
    """Several schemas (a request's functions), each on its own and all within one budget of nodes and
    characters; the error's ``index`` names the schema at fault, -1 when it is their sum. Stops at the
    first schema that makes the sum too large, so it costs at most twice ``limits.nodes`` steps."""
    nodes = chars = 0
    for index, schema in enumerate(schemas):
        try:
            more_nodes, more_chars = check_schema(schema, limits)
        except SchemaError as exc:
            exc.index = index
            raise
        nodes, chars = nodes + more_nodes, chars + more_chars
        if nodes > limits.nodes or chars > limits.chars:
            raise SchemaError(
                "",
                f"together they hold more than {limits.nodes} nodes or {limits.chars} characters (this server's limit)",
                -1,
            )


def explain(exc: SchemaError, field: str) -> tuple[str, str]:
    """The request field at fault and the message, for ``exc`` in the schema(s) of ``field``
    (``response_format``, or ``tools`` as ``check_schemas`` checked them)."""
    if field == "tools" and exc.index < 0:
        return field, f"tools: the functions' parameters: {exc.problem}"
    if field == "tools":
        field = f"tools[{exc.index}].function.parameters"
    return field, f"{field}: the JSON schema at {exc}"


def check_size(document: Any, limits: SchemaLimits = LIMITS) -> tuple[int, int]:
    """Depth, node and character counts of a whole document, without recursion, in at most
    ``limits.nodes`` steps (a container's members are counted before any is walked); its nodes and
    characters."""
    nodes, chars = 1, 0
    todo: list[tuple[Any, int]] = [(document, 1)]
    while todo:
        value, depth = todo.pop()
        nodes += len(value) if isinstance(value, dict | list) else 0  # members counted before they are walked
        if nodes > limits.nodes:
            raise SchemaError("", f"the schema has more than {limits.nodes} nodes (this server's limit)")
        if isinstance(value, dict):
            chars += sum(len(k) for k in value if isinstance(k, str))
            if any(isinstance(k, str) and "\x00" in k for k in value):
                raise SchemaError("", NUL_PROBLEM)
            todo.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list | str))
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value if isinstance(v, dict | list | str))
        elif isinstance(value, str):
            chars += len(value)
            if "\x00" in value:
                raise SchemaError("", NUL_PROBLEM)
        if depth > limits.depth and isinstance(value, dict | list):
            raise SchemaError("", f"the schema is nested more than {limits.depth} levels deep (this server's limit)")
        if chars > limits.chars:
            raise SchemaError("", f"the schema holds more than {limits.chars} characters (this server's limit)")
    return nodes, chars


class _Checker:
    """The schema keywords the grammar converter reads, checked where they stand."""

    def __init__(self, root: dict[str, Any], limits: SchemaLimits) -> None:
        self.root, self.limits = root, limits
        self.repeat = 0
        self.refs: dict[str, str] = {}  # a $ref -> the pointer of its first use

    def visit(self, node: Any, at: str) -> None:
        if not isinstance(node, dict):
            if isinstance(node, bool):
                return  # true / false schemas
            raise SchemaError(at, "a schema must be a JSON object")
        self._type(node, at)
        self._ref(node, at)
        self._enum(node, at)
        self._counts(node, at)
        if "pattern" in node:
            self._pattern(node["pattern"], f"{at}/pattern")
        for pointer, child in _children(node, at):
            self.visit(child, pointer)

    def _type(self, node: dict[str, Any], at: str) -> None:
        kind = node.get("type")
        kinds = kind if isinstance(kind, list) and kind else [kind]
        for one in kinds:
            if one is not None and (not isinstance(one, str) or one not in TYPES):
                raise SchemaError(f"{at}/type", f"unknown type {one!r}; known: {', '.join(sorted(TYPES))}")

    def _ref(self, node: dict[str, Any], at: str) -> None:
        if "$ref" not in node:
            return
        ref = node["$ref"]
        if not isinstance(ref, str):
            raise SchemaError(f"{at}/$ref", "$ref must be a string")
        if ref == "#":
            raise SchemaError(
                f"{at}/$ref", "$ref '#' (the whole schema) is not supported; put the part under $defs and refer to it"
            )
        if not ref.startswith("#/"):
            raise SchemaError(f"{at}/$ref", f"only references inside the schema (#/...) are supported, not {ref!r}")
        if resolve(self.root, ref) is None:
            raise SchemaError(f"{at}/$ref", f"$ref {ref!r} points to nothing in the schema")
        self.refs.setdefault(ref, f"{at}/$ref")

    def _enum(self, node: dict[str, Any], at: str) -> None:
        if "enum" not in node:
            return
        values = node["enum"]
        if not isinstance(values, list) or not values:
            raise SchemaError(f"{at}/enum", "enum must be a non-empty array")
        if len(values) > self.limits.enum:
            raise SchemaError(f"{at}/enum", f"enum has {len(values)} values; this server's limit is {self.limits.enum}")

    def _counts(self, node: dict[str, Any], at: str) -> None:
        for key in _COUNTS:
            value = node.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SchemaError(f"{at}/{key}", f"{key} must be a non-negative integer")
            self._spend(value, f"{at}/{key}", f"{key} {value}")
        for low, high in (("minLength", "maxLength"), ("minItems", "maxItems")):
            if isinstance(node.get(low), int) and isinstance(node.get(high), int) and node[low] > node[high]:
                raise SchemaError(f"{at}/{low}", f"{low} {node[low]} is more than {high} {node[high]}")
        props = node.get("properties")
        if props is not None and (not isinstance(props, dict) or len(props) > self.limits.properties):
            raise SchemaError(
                f"{at}/properties", f"properties must be an object of at most {self.limits.properties} schemas"
            )
        required = node.get("required")
        if required is not None and not (isinstance(required, list) and all(isinstance(r, str) for r in required)):
            raise SchemaError(f"{at}/required", "required must be an array of property names")

    def _spend(self, count: int, at: str, what: str) -> None:
        if count > self.limits.repeat:
            raise SchemaError(at, f"{what} is more than this server's limit of {self.limits.repeat}")
        self.repeat += count
        if self.repeat > self.limits.total_repeat:
            raise SchemaError(
                at,
                f"the schema's lengths, sizes and pattern repetitions add up to more than {self.limits.total_repeat}"
                " (this server's limit)",
            )

    def _pattern(self, pattern: Any, at: str) -> None:
        if not isinstance(pattern, str):
            raise SchemaError(at, "pattern must be a string")
        if len(pattern) > self.limits.pattern:
            raise SchemaError(at, f"the pattern is longer than this server's limit of {self.limits.pattern} characters")
        if not (pattern.startswith("^") and pattern.endswith("$")):
            raise SchemaError(at, "a pattern must start with ^ and end with $")
        if NUL_ESCAPE.search(pattern):
            raise SchemaError(at, NUL_PROBLEM)
        weight = pattern_weight(pattern, self.limits, at)
        self._spend(weight, at, f"the pattern spelled out ({weight} repetitions)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SchemaError(at, f"the pattern is not a regular expression: {exc}") from None

    def check_refs(self) -> None:
        """Refuse a $ref that reaches itself through nothing but $ref and anyOf/oneOf/allOf (left recursion:
        a grammar that never writes a character before it recurses; llama.cpp refuses it)."""
        for ref, at in self.refs.items():
            if self._reaches(ref, ref, set()):
                raise SchemaError(
                    at, f"$ref {ref!r} refers to itself with no object or array in between (left recursion)"
                )

    def _reaches(self, ref: str, target: str, seen: set[str]) -> bool:
        if ref in seen:
            return False
        seen.add(ref)
        for inner in _leading_refs(resolve(self.root, ref)):
            if inner == target or self._reaches(inner, target, seen):
                return True
        return False


def _children(node: dict[str, Any], at: str) -> Iterator[tuple[str, Any]]:
    """The subschemas of ``node`` with their pointers (the keywords the converter reads)."""
    for key in ("properties", "$defs", "definitions"):
        value = node.get(key)
        if isinstance(value, dict):
            yield from ((f"{at}/{key}/{_escape(k)}", v) for k, v in value.items())
        elif value is not None:
            raise SchemaError(f"{at}/{key}", f"{key} must be an object of schemas")
    for key in ("items", "prefixItems", *_UNIONS):
        value = node.get(key)
        if isinstance(value, list):
            if key in _UNIONS and not value:
                raise SchemaError(f"{at}/{key}", f"{key} must be a non-empty array of schemas")
            yield from ((f"{at}/{key}/{i}", v) for i, v in enumerate(value))
        elif isinstance(value, dict | bool) and key == "items":
            yield f"{at}/{key}", value
        elif value is not None:
            raise SchemaError(f"{at}/{key}", f"{key} must be {'a schema or ' if key == 'items' else ''}an array")
    extra = node.get("additionalProperties")
    if extra is not None:
        yield f"{at}/additionalProperties", extra


def _leading_refs(node: Any) -> Iterator[str]:
    """The $refs ``node`` may turn into before writing anything: its own, and its unions' (recursively)."""
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$ref"), str):
        yield node["$ref"]
    for key in _UNIONS:
        members = node.get(key)
        if isinstance(members, list):
            for member in members:
                yield from _leading_refs(member)


def resolve(root: dict[str, Any], ref: str) -> Any:
    """The part of ``root`` a ``#/a/b`` reference names (segments as the grammar converter reads
    them), or None."""
    target: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(target, dict) or part not in target:
            return None
        target = target[part]
    return target


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def pattern_weight(pattern: str, limits: SchemaLimits = LIMITS, at: str = "pattern") -> int:
    """How many items the pattern spells out as a grammar: every atom counts 1, a ``{m,n}``
    multiplies what it follows by its larger bound, groups and alternatives add up."""
    frames: list[list[int]] = [[0, 0]]  # per open group: [cost of what is complete, cost of the last item]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        top = frames[-1]
        if c == "(":
            if len(frames) > limits.pattern_depth:
                raise SchemaError(at, f"the pattern nests groups more than {limits.pattern_depth} deep")
            frames.append([0, 0])
        elif c == ")":
            if len(frames) == 1:
                raise SchemaError(at, "the pattern has an unbalanced ')'")
            done = frames.pop()
            frames[-1][0] += frames[-1][1]
            frames[-1][1] = done[0] + done[1]
        elif c == "|":
            top[0], top[1] = top[0] + top[1], 0
        elif c == "{" and (quantifier := re.match(r"\{(\d+)(,(\d*))?\}", pattern[i:])):
            low, high = int(quantifier[1]), int(quantifier[3] or 0)
            count = max(low, high, 1)
            if count > limits.repeat:
                raise SchemaError(
                    at, f"the repetition {quantifier[0]} is more than this server's limit of {limits.repeat}"
                )
            top[1] *= count
            if top[1] > limits.repeat:
                raise SchemaError(at, f"the pattern spells out more than this server's limit of {limits.repeat} items")
            i += len(quantifier[0]) - 1
        elif c not in "*+?^$":
            i = _atom_end(pattern, i)
            top[0], top[1] = top[0] + top[1], 1
            continue
        i += 1
    if len(frames) != 1:
        raise SchemaError(at, "the pattern has an unbalanced '('")
    return frames[0][0] + frames[0][1]


def _atom_end(pattern: str, i: int) -> int:
    """Where the atom starting at ``i`` ends: an escape, a character class, or one character."""
    if pattern[i] == "\\":
        return min(i + 2, len(pattern))
    if pattern[i] != "[":
        return i + 1
    j = i + 1
    if pattern[j : j + 1] == "^":
        j += 1
    if pattern[j : j + 1] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1
