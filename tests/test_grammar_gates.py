"""Issue 18: the daemon's grammar gates with the real llama.cpp (the demo model's vocabulary only), and
the margin between ``runtime.api.schema.LIMITS`` and what llama.cpp refuses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from llama_cpp.llama_grammar import json_schema_to_gbnf

from runtime.api.output import OutputSpec
from runtime.api.schema import LIMITS, SchemaError, check_schema, check_schemas, pattern_weight
from runtime.backends.base import BackendError
from runtime.backends.demo import demo_model_path
from runtime.backends.grammar import check_grammar, compile_grammar, grammar_depth, output_grammar


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(demo_model_path()), vocab_only=True, verbose=False)
    yield llm._model.vocab
    llm.close()


def accepted(gbnf: str, vocab: Any) -> bool:
    try:
        compile_grammar(gbnf, vocab, "response_format")
    except BackendError as exc:
        assert exc.code == "bad_request" and exc.param == "response_format"
        return False
    return True


@pytest.mark.parametrize(
    "gbnf",
    [
        'root ::= root "a" | "b"\n',  # left recursion
        json_schema_to_gbnf(json.dumps({"enum": []})),
        'root ::= "a" undefined\n',
        json_schema_to_gbnf(json.dumps({"type": "string", "maxLength": 1100})),  # over 2,000 rules
    ],
)
def test_a_grammar_llama_cpp_refuses_is_a_bad_request_not_a_null_sampler(gbnf: str, vocab: Any) -> None:
    """Each of these was a NULL sampler that llama-cpp-python sampled with: SIGSEGV."""
    assert not accepted(gbnf, vocab)


def test_the_repeat_limit_is_half_of_what_llama_cpp_refuses(vocab: Any) -> None:
    """Measured on the pinned llama.cpp: maxLength 1000 compiles, 1100 does not; the limit is 500."""
    at = 2 * LIMITS.repeat
    assert accepted(json_schema_to_gbnf(json.dumps({"type": "string", "maxLength": at})), vocab)
    items = {"type": "array", "items": {"type": "integer"}, "maxItems": at}
    assert accepted(json_schema_to_gbnf(json.dumps(items)), vocab)
    pattern = {"type": "string", "pattern": f"^a{{0,{at}}}$"}
    assert accepted(json_schema_to_gbnf(json.dumps(pattern)), vocab)
    over = json_schema_to_gbnf(json.dumps({"type": "string", "maxLength": at * 11 // 10}))
    assert not accepted(over, vocab)


def test_the_largest_schema_allowed_compiles_in_milliseconds(vocab: Any) -> None:
    each = LIMITS.total_repeat // LIMITS.repeat // 3
    props: dict[str, Any] = {}
    for i in range(each):
        props[f"s{i}"] = {"type": "string", "maxLength": LIMITS.repeat}
        props[f"a{i}"] = {"type": "array", "items": {"type": "number"}, "maxItems": LIMITS.repeat}
        props[f"p{i}"] = {"type": "string", "pattern": f"^[a-z0-9]{{0,{LIMITS.repeat}}}$"}
    props["e"] = {"enum": [f"value {i}" for i in range(LIMITS.enum)]}
    schema = {"type": "object", "properties": props}
    check_schema(schema)
    started = time.perf_counter()
    gbnf = output_grammar(OutputSpec(response_format={"type": "json_schema", "schema": schema}))
    assert gbnf is not None and accepted(gbnf, vocab)
    assert time.perf_counter() - started < 2.0
    assert grammar_depth(gbnf) <= LIMITS.repeat + 2


def test_grammar_depth_counts_groups_not_parentheses_in_literals() -> None:
    assert grammar_depth('root ::= ("(" [(] ("\\")" x)?)? # ((((\n') == 2
    assert grammar_depth("root ::= x") == 0


def test_a_grammar_nested_past_the_bound_is_refused_before_llama_cpp_sees_it() -> None:
    """llama.cpp's parser recurses per group: 100,000 nested groups overflowed an 8 MB stack."""
    deep = "root ::= " + "(" * 100_000 + '"a"' + ")" * 100_000 + "\n"
    with pytest.raises(BackendError, match="nests 100000 groups"):
        check_grammar(deep, "response_format")


def test_a_grammar_that_asks_for_u0000_is_refused() -> None:
    """No token writes U+0000: llama.cpp rejected every token, sampled one anyway and threw (SIGABRT)."""
    with pytest.raises(BackendError, match="U\\+0000"):
        check_grammar('root ::= "\\"\\u0000\\""\n', "response_format")
    check_grammar('char ::= [^"\\\\\\x7F\\x00-\\x1F]\nroot ::= "\\\\u0000"\n', "response_format")  # not U+0000


def test_the_daemon_names_the_function_at_fault() -> None:
    good = {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}
    bad = {"type": "function", "function": {"name": "b", "parameters": {"type": "banana"}}}
    with pytest.raises(BackendError) as caught:
        output_grammar(OutputSpec(tools=(good, bad), tool_choice="required"))
    assert caught.value.param == "tools[1].function.parameters"
    assert "unknown type 'banana'" in str(caught.value)


def test_a_converter_failure_is_a_bad_request() -> None:
    """The converter reports what it does not support with assertions and key errors (a 502 before)."""
    root_ref = {
        "$defs": {"n": {"type": "object", "properties": {"k": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}},
        "$ref": "#/$defs/n",
    }
    with pytest.raises(BackendError) as caught:
        output_grammar(OutputSpec(response_format={"type": "json_schema", "schema": root_ref}))
    assert caught.value.code == "bad_request" and caught.value.param == "response_format"


@pytest.mark.parametrize(
    ("pattern", "weight"),
    [("^abc$", 3), ("^a{3}b{2,5}$", 8), ("^(ab|c){4}$", 12), ("^[a-z]{0,10}\\.x$", 12), ("^a{5,}$", 5)],
)
def test_pattern_weight(pattern: str, weight: int) -> None:
    assert pattern_weight(pattern) == weight


def test_several_schemas_share_one_budget() -> None:
    leaves = {f"q{j}": {"type": "integer"} for j in range(20)}
    part = {"type": "object", "properties": {f"p{i}": {"type": "object", "properties": leaves} for i in range(90)}}
    assert 0.35 * LIMITS.nodes < check_schema(part)[0] < 0.5 * LIMITS.nodes
    check_schemas([part, part])
    with pytest.raises(SchemaError) as caught:
        check_schemas([part, part, part])
    assert caught.value.index == -1
    with pytest.raises(SchemaError) as caught:
        check_schemas([part, {"type": "banana"}])
    assert caught.value.index == 1
