"""The CPU backend: llama.cpp through llama-cpp-python.

Chat messages go through the chat template stored in the GGUF file. Tokens are
sampled one at a time with ``Llama.generate`` so that the stop flag is checked
between tokens and the prompt/completion counts are the model's exact ones.
Every sampling parameter of a request applies (``temperature``, ``top_p``,
``top_k``, ``min_p``, ``repeat_penalty``, ``frequency_penalty``,
``presence_penalty``, ``seed``); the penalties look at the tokens generated so
far (llama.cpp's last 64), not at the prompt.

Tools, ``response_format`` and log-probabilities are in ``runtime.backends.structured``. A model
loaded with ``embedding=true`` computes embeddings (mean-pooled, normalised) and does not generate.
"""

from __future__ import annotations

import codecs
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2

from runtime.api.models import ModelConfig
from runtime.api.protocol import ERR_BAD_REQUEST, ERR_CONTEXT_LENGTH, GenerateSpec
from runtime.backends.base import Backend, BackendError, Cancelled, Emit, Outcome
from runtime.backends.chat_template import ChatTemplate
from runtime.backends.grammar import compile_grammar, output_grammar
from runtime.backends.stop_strings import StopBuffer
from runtime.backends.structured import (
    CALL_TAG,
    CallSniffer,
    parse_call,
    template_messages,
    token_logprobs,
)

log = logging.getLogger(__name__)

_PARAMS: dict[str, type] = {
    "n_ctx": int,
    "n_threads": int,
    "n_batch": int,
    "n_gpu_layers": int,
    "use_mmap": bool,
    "seed": int,
    "embedding": bool,
}
_GGUF_MAGIC = b"GGUF"


class LlamaCppBackend(Backend):
    def __init__(self) -> None:
        self._llm: Any = None
        self._template: ChatTemplate | None = None
        self._n_ctx = 0
        self._embedding = False
        self._memory: int | None = None

    def load(self, config: ModelConfig) -> None:
        kwargs = _check_params(config.params)
        _check_gguf(Path(config.path))
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - install problem
            raise BackendError(f"llama-cpp-python is not installed: {exc}") from None
        kwargs.setdefault("n_ctx", 2048)
        kwargs.setdefault("n_threads", min(4, os.cpu_count() or 1))
        self._embedding = bool(kwargs.get("embedding"))
        if self._embedding:
            import llama_cpp

            kwargs["pooling_type"] = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        try:
            self._llm = Llama(model_path=config.path, verbose=False, **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"llama.cpp could not load {config.path}: {exc}") from None
        self._n_ctx = self._llm.n_ctx()
        self._memory = _footprint(self._llm)
        self._template = self._chat_template()

    def _chat_template(self) -> ChatTemplate | None:
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        llm = self._llm
        try:
            return ChatTemplate(
                template,
                eos_token=llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace"),
                bos_token=llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "replace"),
            )
        except jinja2.TemplateError as exc:
            raise BackendError(f"the model's chat template does not compile: {exc}") from None

    def generate(self, spec: GenerateSpec, emit: Emit, cancelled: Cancelled) -> Outcome:
        llm = self._llm
        if llm is None:
            raise BackendError("model is not loaded")
        if self._embedding:
            raise BackendError("this model is loaded for embeddings; it does not generate text", ERR_BAD_REQUEST)
        tokens, extra_stops = self._prompt_tokens(spec, cancelled)
        budget = self._n_ctx - len(tokens)
        if budget <= 0:
            raise BackendError(
                f"the prompt is {len(tokens)} tokens; this model's context is {self._n_ctx}",
                code=ERR_CONTEXT_LENGTH,
            )
        p = spec.params
        if p.seed is not None:
            # Re-evaluate the whole prompt: a reused KV prefix changes logits slightly.
            llm.set_seed(p.seed)
            llm.reset()
        run = _Run(spec, min(p.max_tokens, budget), p.stop + extra_stops, cancelled)
        out = spec.output
        if not out.calls_tools or out.tool_choice != "auto":
            return self._constrained(run, tokens, emit)
        return self._auto_tools(run, tokens, emit)

    def _constrained(self, run: _Run, tokens: list[int], emit: Emit) -> Outcome:
        """Text, JSON or (tool_choice required/named) one call, under the request's grammar."""
        out = run.spec.output
        gbnf = output_grammar(out)
        if not out.calls_tools:
            return self._sample(run, tokens, self._grammar(gbnf, "response_format"), emit, run.cancelled)
        held = CallSniffer(emit)
        held.calling = held.decided = True  # the grammar allows nothing but the call
        outcome = self._sample(run, tokens, self._grammar(gbnf, "tools"), held, run.cancelled)
        return _with_call(outcome, held.held())

    def _auto_tools(self, run: _Run, tokens: list[int], emit: Emit) -> Outcome:
        """tool_choice auto: the model writes freely; if it begins a ``<tool_call>``, the call is then
        sampled again under the call's grammar, after the tag (free text needs no grammar, which would
        slow every token down)."""
        sniffer = CallSniffer(emit)
        outcome = self._sample(run, tokens, None, sniffer, lambda: run.cancelled() or sniffer.calling)
        if not sniffer.calling or run.cancelled():
            return outcome
        forced = replace(run.spec.output, tool_choice="required")
        grammar = self._grammar(output_grammar(forced), "tools")
        tag = self._llm.tokenize(CALL_TAG.encode(), add_bos=False, special=True)
        held = CallSniffer(emit)
        held.calling = held.decided = True
        return _with_call(self._sample(run, tokens + tag, grammar, held, run.cancelled), held.held())

    def _grammar(self, gbnf: str | None, param: str) -> Any:
        return compile_grammar(gbnf, self._llm._model.vocab, param) if gbnf else None

    def _sample(self, run: _Run, tokens: list[int], grammar: Any, emit: Emit, cancelled: Cancelled) -> Outcome:
        llm, p = self._llm, run.spec.params
        sampler = llm.generate(
            tokens,
            grammar=grammar,
            temp=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            min_p=p.min_p,
            repeat_penalty=p.repeat_penalty,
            frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty,
        )
        is_eog = (lambda token: False) if p.ignore_eos else _eog_check(llm)
        top = run.spec.output.logprobs
        logprobs: list[dict[str, Any]] | None = [] if top is not None else None
        outcome = self._decode(sampler, is_eog, len(tokens), run.limit, run.stops, emit, cancelled, logprobs, top or 0)
        return replace(outcome, logprobs=tuple(logprobs) if logprobs is not None else None)

    def _prompt_tokens(self, spec: GenerateSpec, cancelled: Cancelled) -> tuple[list[int], tuple[str, ...]]:
        llm = self._llm
        if spec.messages is None:
            return llm.tokenize((spec.prompt or "").encode("utf-8"), add_bos=True, special=False), ()
        if self._template is None:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in spec.messages) + "assistant: "
            return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False), ()
        native = self._template.uses_tools
        messages = template_messages(spec.messages, spec.output, native)
        tools = list(spec.output.tools) if native and spec.output.calls_tools else None
        result = self._template.render(messages, tools, cancelled)
        # The template writes the special tokens (BOS) itself, as Jinja2ChatFormatter's ``added_special``.
        tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=False, special=True)
        return tokens, (result.stop,)

    def _decode(
        self,
        sampler: Any,
        is_eog: Callable[[int], bool],
        n_prompt: int,
        limit: int,
        stops: tuple[str, ...],
        emit: Emit,
        cancelled: Cancelled,
        logprobs: list[dict[str, Any]] | None = None,
        top: int = 0,
    ) -> Outcome:
        llm, p_start = self._llm, time.perf_counter()
        logits = _last_logits(llm) if logprobs is not None else None
        piece = lambda t: llm.detokenize([t])  # noqa: E731
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stop_buf = StopBuffer(stops)
        count, finish, first_at = 0, "length", 0.0
        try:
            for token in sampler:
                if not first_at:
                    first_at = time.perf_counter()
                if is_eog(token):
                    finish = "stop"
                    break
                if logits is not None and logprobs is not None:
                    logprobs.append(token_logprobs(logits(), token, top, piece))
                count += 1
                text, stopped = stop_buf.push(decoder.decode(llm.detokenize([token])))
                if text:
                    emit(text, final=stopped or count >= limit)
                if stopped:
                    finish = "stop"
                    break
                if cancelled():
                    finish = "aborted"
                    break
                if count >= limit:
                    break
        finally:
            sampler.close()
        tail = stop_buf.flush() + decoder.decode(b"", final=True) if finish != "stop" else ""
        if tail and finish != "aborted":
            emit(tail, final=True)
        end = time.perf_counter()
        first_at = first_at or end
        return Outcome(finish, n_prompt, count, (first_at - p_start) * 1000, (end - first_at) * 1000)

    def warm(self) -> None:
        if self._embedding:
            self._llm.embed(["warm-up"])
        else:
            super().warm()
        self._llm.reset()  # no warm-up tokens kept for prefix reuse: the first request runs as on a fresh load

    def embed(self, inputs: list[str], cancelled: Cancelled) -> tuple[list[list[float]], int]:
        if not self._embedding:
            raise BackendError(
                "this model is not loaded for embeddings (load it with the parameter embedding=true)", ERR_BAD_REQUEST
            )
        for text in inputs:
            n = len(self.tokenize(text, True))
            if n > self._n_ctx:
                raise BackendError(f"an input is {n} tokens; this model's context is {self._n_ctx}", ERR_CONTEXT_LENGTH)
        vectors, count = self._llm.embed(inputs, normalize=True, return_count=True)
        return [list(map(float, v)) for v in vectors], int(count)

    def context_length(self) -> int | None:
        return self._n_ctx or None

    def memory_bytes(self) -> int | None:
        return self._memory

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=add_special))

    def detokenize(self, tokens: list[int]) -> str:
        n_vocab = self._llm.n_vocab()
        bad = [t for t in tokens if not 0 <= t < n_vocab]
        if bad:
            raise BackendError(
                f"token ids out of this model's vocabulary (0..{n_vocab - 1}): {bad[:5]}", ERR_BAD_REQUEST
            )
        return str(self._llm.detokenize(tokens).decode("utf-8", "replace"))

    def unload(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()


def _eog_check(llm: Any) -> Callable[[int], bool]:
    """End-of-generation test from the model's vocabulary (EOS, EOT, <|im_end|>...)."""
    import llama_cpp

    vocab = llm._model.vocab
    return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))


@dataclass(frozen=True)
class _Run:
    """One request's fixed parts, for the one or two sampling passes it takes."""

    spec: GenerateSpec
    limit: int
    stops: tuple[str, ...]
    cancelled: Cancelled


def _with_call(outcome: Outcome, text: str) -> Outcome:
    """The outcome of a pass that wrote a tool call: the call parsed, finish reason ``tool_calls``."""
    if outcome.finish_reason == "aborted":
        return outcome
    if outcome.finish_reason == "length":
        return replace(outcome, tool_calls=(parse_call(text, complete=False),))
    return replace(outcome, tool_calls=(parse_call(text, complete=True),), finish_reason="tool_calls")


def _last_logits(llm: Any) -> Callable[[], Any]:
    """The logits the sampler just chose from (the last decoded position), as a numpy view."""
    import llama_cpp
    import numpy as np

    n_vocab = llm.n_vocab()
    ctx = llm._ctx.ctx
    return lambda: np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))


KV_BYTES = 2  # llama.cpp keeps its K and V caches in f16 unless told otherwise


def _footprint(llm: Any) -> int | None:
    """The loaded model's weights plus its K/V cache for the whole context, in bytes: what llama.cpp
    allocates for it (an estimate in the way of Ollama's ``ps``; compute buffers come on top)."""
    import llama_cpp

    model = llm.model
    try:
        weights = int(llama_cpp.llama_model_size(model))
        layers, embd = llama_cpp.llama_model_n_layer(model), llama_cpp.llama_model_n_embd(model)
        heads, kv_heads = llama_cpp.llama_model_n_head(model), llama_cpp.llama_model_n_head_kv(model)
    except (AttributeError, OSError) as exc:  # an older libllama without these functions
        log.debug("no memory figure: %s", exc)
        return None
    kv_width = embd * kv_heads // heads if heads else embd
    return weights + 2 * llm.n_ctx() * layers * kv_width * KV_BYTES


def _check_params(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        kind = _PARAMS.get(key)
        if kind is None:
            raise BackendError(f"unknown llamacpp parameter {key!r}; known: {', '.join(sorted(_PARAMS))}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise BackendError(f"llamacpp parameter {key!r} must be a non-negative integer, got {value!r}")
        if kind is bool and not isinstance(value, bool):
            raise BackendError(f"llamacpp parameter {key!r} must be true or false, got {value!r}")
        out[key] = value
    return out


def _check_gguf(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise BackendError(f"model file not found: {path}") from None
    except OSError as exc:
        raise BackendError(f"model file {path} cannot be read: {exc.strerror}") from None
    if magic != _GGUF_MAGIC:
        raise BackendError(f"model file {path} is not a GGUF file")
