"""A generation request as the metering layer sees it: model, input, limits, sampling, delivery.

An embeddings request is metered by the same owner (``proxy.metering.meter``, through
``Generations.run``): it is a request with ``inputs`` and nothing to generate
(:func:`embedding_request`); so are the tokenizer's (:func:`tokenizer_request`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from proxy.errors import bad_request
from runtime.api.output import OutputSpec
from runtime.api.protocol import SamplingParams

MAX_MODEL_NAME = 400  # characters; model names are short, and a name reaches the ledger and the logs


def check_model_length(model: str) -> str:
    """``model``, if it is short enough to be a model's name; a 400 otherwise. Every front calls
    this before anything is stored or labelled (issues 14 and 18: 900 KB names)."""
    if len(model) > MAX_MODEL_NAME:
        raise bad_request(f"'model' is longer than {MAX_MODEL_NAME} characters", "model", "model_name_too_long")
    return model


@dataclass(frozen=True)
class GenerationRequest:
    """What both text endpoints ask for, normalised."""

    model: str
    messages: tuple[dict[str, Any], ...] | None  # chat
    prompt: str | None  # completions
    max_tokens: int
    temperature: float
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    top_k: int  # llama.cpp extensions from here
    min_p: float
    repeat_penalty: float
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool
    echo: bool = False
    output: OutputSpec = field(default_factory=OutputSpec)  # tools, response_format, logprobs
    inputs: tuple[str, ...] | None = None  # embeddings

    @property
    def chat(self) -> bool:
        return self.messages is not None

    def sampling(self, max_tokens: int) -> SamplingParams:
        """The runtime's parameters, generating at most ``max_tokens``."""
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop=self.stop,
            seed=self.seed,
        )


def embedding_request(model: str, inputs: tuple[str, ...]) -> GenerationRequest:
    """An embeddings request: its inputs are the prompt; nothing is generated (max_tokens 0)."""
    d = SamplingParams()
    return GenerationRequest(
        model=model,
        messages=None,
        prompt=None,
        max_tokens=0,
        temperature=d.temperature,
        top_p=d.top_p,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        top_k=d.top_k,
        min_p=d.min_p,
        repeat_penalty=d.repeat_penalty,
        stop=(),
        seed=None,
        stream=False,
        include_usage=False,
        inputs=inputs,
    )


def tokenizer_request(model: str, inputs: tuple[str, ...], max_tokens: int) -> GenerationRequest:
    """A tokenize request (its text in ``inputs``, the prompt) or a detokenize one (no input;
    ``max_tokens``: the text it may produce, one per token id)."""
    return replace(embedding_request(model, inputs), max_tokens=max_tokens)
