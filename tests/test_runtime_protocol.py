"""The runtime protocol's sampling parameters: validation and their wire form (unit)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.api.protocol import (
    SAMPLING_BOUNDS,
    ProtocolError,
    SamplingParams,
    params_to_wire,
    parse_generate,
    parse_params,
)


def test_defaults_of_the_new_fields_are_llama_cpps() -> None:
    p = parse_params({})
    assert (p.min_p, p.frequency_penalty, p.presence_penalty) == (0.05, 0.0, 0.0)
    assert (p.top_k, p.repeat_penalty) == (40, 1.0)


def test_new_fields_are_parsed() -> None:
    p = parse_params({"min_p": 0.2, "frequency_penalty": 1.5, "presence_penalty": -2, "top_k": 0})
    assert (p.min_p, p.frequency_penalty, p.presence_penalty, p.top_k) == (0.2, 1.5, -2.0, 0)
    assert isinstance(p.presence_penalty, float)
    for edge in ({"min_p": 0}, {"min_p": 1}, {"frequency_penalty": 2.0}, {"presence_penalty": -2.0}):
        parse_params(edge)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_p", -0.01),
        ("min_p", 1.5),
        ("min_p", "0.1"),
        ("min_p", True),
        ("frequency_penalty", 2.5),
        ("frequency_penalty", -2.01),
        ("frequency_penalty", None),
        ("presence_penalty", 3),
        ("presence_penalty", -3),
        ("presence_penalty", [1]),
        ("top_k", -1),
        ("top_k", 1.5),
        ("repeat_penalty", -0.1),
        ("repeat_penalty", 11),
    ],
)
def test_bad_values_are_refused_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ProtocolError, match=f"'{field}' must be"):
        parse_params({field: value})
    with pytest.raises(ProtocolError, match=f"'{field}' must be"):
        parse_generate({"model": "m", "prompt": "x", "params": {field: value}})


def test_wire_round_trip_keeps_every_field() -> None:
    p = SamplingParams(
        max_tokens=7,
        temperature=0.3,
        top_p=0.9,
        top_k=1,
        repeat_penalty=1.1,
        min_p=0.1,
        frequency_penalty=2.0,
        presence_penalty=-0.5,
        stop=("\n",),
        seed=4,
        ignore_eos=True,
    )
    wire = json.loads(json.dumps(params_to_wire(p)))
    assert parse_params(wire) == p


def test_wire_leaves_out_the_new_fields_at_their_defaults() -> None:
    """An unchanged request is the same frame as before the fields existed, for older daemons."""
    wire = params_to_wire(SamplingParams(max_tokens=5))
    assert not {"min_p", "frequency_penalty", "presence_penalty"} & set(wire)
    assert parse_params(wire) == SamplingParams(max_tokens=5)
    wire = params_to_wire(SamplingParams(presence_penalty=0.5))
    assert wire["presence_penalty"] == 0.5 and "frequency_penalty" not in wire and "min_p" not in wire


@pytest.mark.parametrize(
    ("field", "value"),
    [("repeat_penalty", 0), ("top_k", -1), ("temperature", 2.5), ("min_p", 1.5), ("stop", ["a", "b", "c", "d", "e"])],
)
def test_the_edge_and_the_wire_refuse_the_same_sampling_values(field: str, value: object) -> None:
    """One table of bounds (issue 8): repeat_penalty 0 used to pass the wire, 5 stop strings the wire."""
    from proxy.errors import ApiError
    from proxy.openai.protocol import parse_completion

    with pytest.raises(ProtocolError):
        parse_params({field: value})
    with pytest.raises(ApiError) as err:
        parse_completion({"model": "m", "prompt": "p", field: value}, 16, 1024)
    assert err.value.param == field


def test_every_bound_admits_its_own_edges() -> None:
    for name, bound in SAMPLING_BOUNDS.items():
        assert bound.admits(bound.hi), name
        assert bound.admits(bound.lo) != bound.lo_open, name
