"""The wire protocol between runtime clients (the proxy) and the runtime daemon.

Transport: a client DEALER talks to the daemon's ROUTER. A request is one
ZeroMQ frame holding one JSON object. A reply message holds one or more such
frames, in order (the daemon sends a request's last text and its ``done`` as one
message); a client handles each frame on its own.

Request (client -> daemon)::

    {"v": 1, "id": "<request id>", "op": "<op>", "deadline": <unix seconds>, ...op fields}

Ops: ``hello``, ``ping``, ``models``, ``load``, ``unload``, ``generate``, ``abort``, and (issue 12)
``embed``, ``tokenize``, ``detokenize``.

Added backwards-compatibly in version 1 (issue 12):

- ``generate`` may carry ``output`` (tools, tool_choice, response_format, logprobs; see
  ``runtime.api.output``); its ``done`` then may carry ``tool_calls`` and ``logprobs``. Messages may
  carry ``tool_calls`` (assistant) and ``tool_call_id``/``name`` (role ``tool``) beside ``content``.
- ``embed`` ``{"model", "input": [str...]}`` -> ``result`` ``{"embeddings": [[float...]...],
  "prompt_tokens": n}``; runs on the model's worker, in its queue, for a model loaded for embeddings.
- ``tokenize`` ``{"model", "content": str, "add_special": bool}`` -> ``result`` ``{"tokens": [int...]}``;
  ``detokenize`` ``{"model", "tokens": [int...]}`` -> ``result`` ``{"content": str}``, with the
  model's own tokenizer.

Added backwards-compatibly in version 1 (issue 23): ``speak`` and ``transcribe`` (``runtime.api.audio``).
A request message may carry one more frame after its JSON: raw bytes the op takes (a ``transcribe``'s
audio file), kept out of the JSON so that megabytes are neither base64-encoded nor parsed.

Reply (daemon -> client)::

    {"v": 1, "id": "<request id>", "type": "<type>", ...type fields}

Types: ``result`` (the answer to every op but ``generate``), and for a
``generate`` the stream ``accepted`` -> ``delta``... -> exactly one of ``done``
or ``error``. Any op may be answered by ``error`` (``code`` and ``message``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from runtime.api.output import OutputSpec, OutputSpecError, parse_output

PROTOCOL_VERSION = 1

OPS = frozenset(
    {"hello", "ping", "models", "load", "unload", "generate", "abort", "embed", "tokenize", "detokenize"}
    | {"speak", "transcribe"}
)

# Error codes carried by ``error`` frames.
ERR_BAD_REQUEST = "bad_request"
ERR_CONTEXT_LENGTH = "context_length_exceeded"  # the prompt does not fit the model's context
ERR_UNSUPPORTED_VERSION = "unsupported_version"
ERR_UNKNOWN_MODEL = "unknown_model"
ERR_BUSY = "busy"
ERR_DEADLINE = "deadline_exceeded"
ERR_ABORTED = "aborted"
ERR_LOAD_FAILED = "load_failed"
ERR_BACKEND = "backend_error"
ERR_SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True)
class Bound:
    """The values a sampling field accepts: ``lo`` (excluded when ``lo_open``) to ``hi``."""

    lo: float
    hi: float
    lo_open: bool = False
    integer: bool = False

    def admits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        return (self.lo < value if self.lo_open else self.lo <= value) and value <= self.hi

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        low = f"above {self.lo:g}" if self.lo_open else f"at least {self.lo:g}"
        return f"{kind} {low} and at most {self.hi:g}"


# The one table of sampling bounds: the daemon's parser and the proxy's both read it.
SAMPLING_BOUNDS: dict[str, Bound] = {
    "max_tokens": Bound(1, 1 << 20, integer=True),
    "temperature": Bound(0.0, 2.0),
    "top_p": Bound(0.0, 1.0),
    "top_k": Bound(0, 1 << 20, integer=True),  # 0 = off
    "min_p": Bound(0.0, 1.0),
    "repeat_penalty": Bound(0.0, 10.0, lo_open=True),  # 1 = off; 0 would divide by zero
    "frequency_penalty": Bound(-2.0, 2.0),
    "presence_penalty": Bound(-2.0, 2.0),
}
MAX_STOP_STRINGS = 4


class ProtocolError(ValueError):
    """A frame that is not valid protocol; ``code`` is the error code the daemon answers with."""

    def __init__(self, message: str, code: str = ERR_BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Request:
    id: str
    op: str
    deadline: float
    body: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""  # the message's optional second frame (raw bytes, e.g. a transcribe's audio)


@dataclass(frozen=True)
class Reply:
    id: str
    type: str
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplingParams:
    """A ``generate``'s ``params``. Each field is optional on the wire; a missing one takes the default here.

    ``min_p``, ``frequency_penalty`` and ``presence_penalty`` came later in protocol version 1: a client
    sends them only when they differ from their defaults, and a daemon that predates them ignores them.
    """

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0
    min_p: float = 0.05  # llama.cpp's default
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerateSpec:
    """What a ``generate`` asks for: chat ``messages`` or a raw ``prompt``."""

    model: str
    messages: tuple[dict[str, Any], ...] | None
    prompt: str | None
    params: SamplingParams
    output: OutputSpec = field(default_factory=OutputSpec)


@dataclass(frozen=True)
class EmbedSpec:
    """What an ``embed`` asks for: one vector per input text."""

    model: str
    inputs: tuple[str, ...]


def parse_embed(body: dict[str, Any]) -> EmbedSpec:
    model, inputs = body.get("model"), body.get("input")
    if not isinstance(model, str) or not model:
        raise ProtocolError("'model' must be a non-empty string")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise ProtocolError("'input' must be a non-empty list of strings")
    return EmbedSpec(model, tuple(inputs))


@dataclass(frozen=True)
class Perf:
    queue_ms: float
    prefill_ms: float
    decode_tps: float


@dataclass(frozen=True)
class Done:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    perf: Perf
    tool_calls: tuple[dict[str, str], ...] = ()
    logprobs: tuple[dict[str, Any], ...] | None = None


def encode_request(req: Request) -> bytes:
    payload = {"v": PROTOCOL_VERSION, "id": req.id, "op": req.op, "deadline": req.deadline}
    payload.update(req.body)
    return json.dumps(payload, separators=(",", ":")).encode()


def decode_request(frame: bytes, payload: bytes = b"") -> Request:
    obj = _load(frame)
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {obj.get('v')!r}", ERR_UNSUPPORTED_VERSION)
    rid, op, deadline = obj.pop("id", None), obj.pop("op", None), obj.pop("deadline", None)
    obj.pop("v")
    if not isinstance(rid, str) or not rid:
        raise ProtocolError("'id' must be a non-empty string")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r}")
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
        raise ProtocolError("'deadline' must be a number (unix seconds)")
    return Request(id=rid, op=op, deadline=float(deadline), body=obj, payload=payload)


def encode_reply(reply: Reply) -> bytes:
    payload = {"v": PROTOCOL_VERSION, "id": reply.id, "type": reply.type}
    payload.update(reply.body)
    return json.dumps(payload, separators=(",", ":")).encode()


def decode_reply(frame: bytes) -> Reply:
    obj = _load(frame)
    rid, kind = obj.pop("id", None), obj.pop("type", None)
    obj.pop("v", None)
    if not isinstance(rid, str) or not isinstance(kind, str):
        raise ProtocolError("reply needs string 'id' and 'type'")
    return Reply(id=rid, type=kind, body=obj)


def _load(frame: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame must be a JSON object")
    return obj


def parse_generate(body: dict[str, Any]) -> GenerateSpec:
    """Validate the fields of a ``generate`` request."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProtocolError("'model' must be a non-empty string")
    messages, prompt = body.get("messages"), body.get("prompt")
    if (messages is None) == (prompt is None):
        raise ProtocolError("exactly one of 'messages' or 'prompt' is required")
    if messages is not None:
        messages = _check_messages(messages)
    elif not isinstance(prompt, str):
        raise ProtocolError("'prompt' must be a string")
    try:
        output = parse_output(body.get("output"))
    except OutputSpecError as exc:
        raise ProtocolError(str(exc)) from None
    return GenerateSpec(model, messages, prompt, parse_params(body.get("params") or {}), output)


def _check_messages(messages: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(messages, list) or not messages:
        raise ProtocolError("'messages' must be a non-empty list")
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ProtocolError("each message needs a string 'role'")
        if not isinstance(m.get("content"), str):
            raise ProtocolError("each message needs a string 'content'")
        message: dict[str, Any] = {"role": m["role"], "content": m["content"]}
        if isinstance(m.get("tool_calls"), list):
            message["tool_calls"] = m["tool_calls"]
        for key in ("tool_call_id", "name"):
            if isinstance(m.get(key), str):
                message[key] = m[key]
        out.append(message)
    return tuple(out)


def parse_params(raw: Any) -> SamplingParams:
    if not isinstance(raw, dict):
        raise ProtocolError("'params' must be an object")
    d = SamplingParams()
    stop = raw.get("stop", d.stop)
    if isinstance(stop, str):
        stop = (stop,)
    if (
        not isinstance(stop, (list, tuple))
        or len(stop) > MAX_STOP_STRINGS
        or not all(isinstance(s, str) and s for s in stop)
    ):
        raise ProtocolError(f"'stop' must be a string or a list of up to {MAX_STOP_STRINGS} non-empty strings")
    seed = raw.get("seed")
    if seed is not None and not _is_int(seed):
        raise ProtocolError("'seed' must be an integer")
    return SamplingParams(
        max_tokens=int(_bounded(raw, "max_tokens", d.max_tokens)),
        temperature=_bounded(raw, "temperature", d.temperature),
        top_p=_bounded(raw, "top_p", d.top_p),
        top_k=int(_bounded(raw, "top_k", d.top_k)),
        repeat_penalty=_bounded(raw, "repeat_penalty", d.repeat_penalty),
        min_p=_bounded(raw, "min_p", d.min_p),
        frequency_penalty=_bounded(raw, "frequency_penalty", d.frequency_penalty),
        presence_penalty=_bounded(raw, "presence_penalty", d.presence_penalty),
        stop=tuple(stop),
        seed=seed,
        ignore_eos=_bool(raw, "ignore_eos", d.ignore_eos),
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bool(raw: dict[str, Any], key: str, default: bool) -> bool:
    v = raw.get(key, default)
    if not isinstance(v, bool):
        raise ProtocolError(f"'{key}' must be true or false")
    return v


def _bounded(raw: dict[str, Any], key: str, default: float) -> float:
    v = raw.get(key, default)
    bound = SAMPLING_BOUNDS[key]
    if not bound.admits(v):
        raise ProtocolError(f"'{key}' must be {bound.describe()}")
    return float(v) if not bound.integer else int(v)


# Sent only when they differ from their defaults (see SamplingParams).
_OPTIONAL_NUMBERS = ("min_p", "frequency_penalty", "presence_penalty")
_DEFAULTS = SamplingParams()


def params_to_wire(p: SamplingParams) -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k,
        "repeat_penalty": p.repeat_penalty,
        "stop": list(p.stop),
    }
    for key in _OPTIONAL_NUMBERS:
        value = getattr(p, key)
        if value != getattr(_DEFAULTS, key):
            out[key] = value
    if p.seed is not None:
        out["seed"] = p.seed
    if p.ignore_eos:
        out["ignore_eos"] = True
    return out


def done_from_body(body: dict[str, Any]) -> Done:
    perf = body.get("perf") or {}
    logprobs = body.get("logprobs")
    return Done(
        finish_reason=str(body.get("finish_reason", "stop")),
        prompt_tokens=int(body.get("prompt_tokens", 0)),
        completion_tokens=int(body.get("completion_tokens", 0)),
        perf=Perf(
            queue_ms=float(perf.get("queue_ms", 0.0)),
            prefill_ms=float(perf.get("prefill_ms", 0.0)),
            decode_tps=float(perf.get("decode_tps", 0.0)),
        ),
        tool_calls=tuple(body.get("tool_calls") or ()),
        logprobs=tuple(logprobs) if isinstance(logprobs, list) else None,
    )


def done_to_body(done: Done) -> dict[str, Any]:
    body: dict[str, Any] = {
        "finish_reason": done.finish_reason,
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "perf": {
            "queue_ms": round(done.perf.queue_ms, 3),
            "prefill_ms": round(done.perf.prefill_ms, 3),
            "decode_tps": round(done.perf.decode_tps, 3),
        },
    }
    if done.tool_calls:
        body["tool_calls"] = list(done.tool_calls)
    if done.logprobs is not None:
        body["logprobs"] = list(done.logprobs)
    return body
