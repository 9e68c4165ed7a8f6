"""The CPU backend: llama.cpp through llama-cpp-python.

Chat messages go through the chat template stored in the GGUF file. Tokens are
sampled one at a time with ``Llama.generate`` so that the stop flag is checked
between tokens and the prompt/completion counts are the model's exact ones.
Every sampling parameter of a request applies (``temperature``, ``top_p``,
``top_k``, ``min_p``, ``repeat_penalty``, ``frequency_penalty``,
``presence_penalty``, ``seed``); the penalties look at the tokens generated so
far (llama.cpp's last 64), not at the prompt.
"""

from __future__ import annotations

import codecs
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.api.models import ModelConfig
from runtime.api.protocol import ERR_CONTEXT_LENGTH, GenerateSpec
from runtime.backends.base import Backend, BackendError, Cancelled, Emit, Outcome
from runtime.backends.stop_strings import StopBuffer

log = logging.getLogger(__name__)

_PARAMS: dict[str, type] = {
    "n_ctx": int,
    "n_threads": int,
    "n_batch": int,
    "n_gpu_layers": int,
    "use_mmap": bool,
    "seed": int,
}
_GGUF_MAGIC = b"GGUF"


class LlamaCppBackend(Backend):
    def __init__(self) -> None:
        self._llm: Any = None
        self._formatter: Any = None
        self._n_ctx = 0

    def load(self, config: ModelConfig) -> None:
        kwargs = _check_params(config.params)
        _check_gguf(Path(config.path))
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - install problem
            raise BackendError(f"llama-cpp-python is not installed: {exc}") from None
        kwargs.setdefault("n_ctx", 2048)
        kwargs.setdefault("n_threads", min(4, os.cpu_count() or 1))
        try:
            self._llm = Llama(model_path=config.path, verbose=False, **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendError(f"llama.cpp could not load {config.path}: {exc}") from None
        self._n_ctx = self._llm.n_ctx()
        self._formatter = self._chat_formatter()

    def _chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        llm = self._llm
        return Jinja2ChatFormatter(
            template=template,
            eos_token=llm.detokenize([llm.token_eos()], special=True).decode("utf-8", "replace"),
            bos_token=llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "replace"),
            stop_token_ids=[llm.token_eos()],
        )

    def generate(self, spec: GenerateSpec, emit: Emit, cancelled: Cancelled) -> Outcome:
        llm = self._llm
        if llm is None:
            raise BackendError("model is not loaded")
        tokens, extra_stops = self._prompt_tokens(spec)
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
        sampler = llm.generate(
            tokens,
            temp=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k,
            min_p=p.min_p,
            repeat_penalty=p.repeat_penalty,
            frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty,
        )
        limit = min(p.max_tokens, budget)
        is_eog = (lambda token: False) if p.ignore_eos else _eog_check(llm)
        return self._decode(sampler, is_eog, len(tokens), limit, p.stop + extra_stops, emit, cancelled)

    def _prompt_tokens(self, spec: GenerateSpec) -> tuple[list[int], tuple[str, ...]]:
        llm = self._llm
        if spec.messages is None:
            return llm.tokenize((spec.prompt or "").encode("utf-8"), add_bos=True, special=False), ()
        if self._formatter is None:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in spec.messages) + "assistant: "
            return llm.tokenize(text.encode("utf-8"), add_bos=True, special=False), ()
        result = self._formatter(messages=list(spec.messages))
        tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stop = result.stop
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        return tokens, stops

    def _decode(
        self,
        sampler: Any,
        is_eog: Callable[[int], bool],
        n_prompt: int,
        limit: int,
        stops: tuple[str, ...],
        emit: Emit,
        cancelled: Cancelled,
    ) -> Outcome:
        llm, p_start = self._llm, time.perf_counter()
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

    def unload(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()


def _eog_check(llm: Any) -> Callable[[int], bool]:
    """End-of-generation test from the model's vocabulary (EOS, EOT, <|im_end|>...)."""
    import llama_cpp

    vocab = llm._model.vocab
    return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))


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
