"""The interface every backend implements, and the registry that finds them.

A backend holds one loaded model. The model manager calls ``load`` once, then
``generate`` from one worker thread at a time, then ``unload``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from runtime.api.audio import AudioChunk, SpeakSpec, TranscribeSpec
from runtime.api.errors import RuntimeServiceError
from runtime.api.models import ModelConfig
from runtime.api.protocol import ERR_BAD_REQUEST, EmbedSpec, GenerateSpec, SamplingParams


class Emit(Protocol):
    """Where a backend puts text as it is generated.

    ``final=True`` says no more text follows: the text may then travel with the end of the
    request instead of in a message of its own.
    """

    def __call__(self, text: str, final: bool = False) -> None: ...


Cancelled = Callable[[], bool]
EmitAudio = Callable[[AudioChunk], None]  # where a speech backend puts each sentence's audio
Spec = GenerateSpec | EmbedSpec | SpeakSpec | TranscribeSpec

BACKENDS = {
    "llamacpp": "runtime.backends.llamacpp:LlamaCppBackend",
    "rkllm": "runtime.backends.rkllm.backend:RKLLMBackend",
    "piper": "runtime.backends.speech.piper:PiperBackend",
    "whisper": "runtime.backends.speech.whisper:WhisperBackend",
}
# What each backend's models do: the model kinds of the registry (llm, tts, stt).
BACKEND_KINDS = {"llamacpp": "llm", "rkllm": "llm", "piper": "tts", "whisper": "stt"}
_OPS_OF_KIND = {"llm": (GenerateSpec, EmbedSpec), "tts": (SpeakSpec,), "stt": (TranscribeSpec,)}
_WORDS = {"llm": "a text model", "tts": "a text-to-speech model", "stt": "a speech-to-text model"}


@dataclass(frozen=True)
class Outcome:
    """How a generation ended, as measured by the backend."""

    finish_reason: str  # "stop", "length" or "aborted"
    prompt_tokens: int
    completion_tokens: int
    prefill_ms: float
    decode_ms: float
    tool_calls: tuple[dict[str, str], ...] = ()  # {"name", "arguments" (JSON text)}
    logprobs: tuple[dict[str, Any], ...] | None = None  # one entry per token (runtime.api.output)


@dataclass(frozen=True)
class SpeechOutcome:
    """How a synthesis ended: ``finish_reason`` "stop" or "aborted", and what it made."""

    finish_reason: str
    audio_seconds: float
    sample_rate: int
    sentences: int
    first_audio_ms: float  # from the start of the work to the first sentence's audio
    synth_ms: float


class Backend(ABC):
    """One loaded model."""

    kind = "llm"  # what its requests are: text (llm), text-to-speech (tts) or speech-to-text (stt)

    @abstractmethod
    def load(self, config: ModelConfig) -> None:
        """Load the model; raise BackendError with a clear message on failure."""

    @abstractmethod
    def generate(self, spec: GenerateSpec, emit: Emit, cancelled: Cancelled) -> Outcome:
        """Run one request; call ``emit`` with text; stop soon after ``cancelled()``."""

    @abstractmethod
    def unload(self) -> None:
        """Free the model. Safe to call twice."""

    def weights(self, config: ModelConfig) -> str:
        """The file the model's weights are in: the daemon checks it is a regular file and that it
        fits in memory before :meth:`load` (a backend whose path is a folder names the file in it)."""
        return config.path

    def admit(self, spec: Spec) -> None:
        """Refuse at once (BackendError) a request this model cannot serve, before it is queued."""
        if not isinstance(spec, _OPS_OF_KIND[self.kind]):
            wanted = next(k for k, ops in _OPS_OF_KIND.items() if isinstance(spec, ops))
            raise BackendError(
                f"model {spec.model!r} is {_WORDS[self.kind]}, not {_WORDS[wanted]}",
                code=ERR_BAD_REQUEST,
                param="model",
            )

    def info(self) -> dict[str, Any]:
        """What the daemon's model list says of this model beyond its state (voices, languages...)."""
        return {}

    def speak(self, spec: SpeakSpec, emit: EmitAudio, cancelled: Cancelled) -> SpeechOutcome:
        """Synthesise ``spec.input``, one ``emit`` per sentence; stop soon after ``cancelled()``."""
        raise BackendError("this model's backend does not speak", code=ERR_BAD_REQUEST)

    def transcribe(self, spec: TranscribeSpec, cancelled: Cancelled) -> dict[str, Any]:
        """The ``result`` body of a ``transcribe`` (``runtime.api.audio``)."""
        raise BackendError("this model's backend does not transcribe", code=ERR_BAD_REQUEST)

    def warm(self) -> None:
        """Pay a model's first-request costs now, right after ``load`` (compute buffers allocated,
        weights paged in from the file): a one-token generation whose text goes nowhere."""
        self.generate(_WARM_UP, _discard, _never)

    def embed(self, inputs: list[str], cancelled: Cancelled) -> tuple[list[list[float]], int]:
        """One embedding per input and the prompt tokens they took; for models loaded for embeddings."""
        raise BackendError("this model's backend does not compute embeddings", code=ERR_BAD_REQUEST)

    def context_length(self) -> int | None:
        """The model's context in its own tokens, once loaded (None: not known)."""
        return None

    def memory_bytes(self) -> int | None:
        """About how much memory the loaded model holds (weights and context cache), in bytes;
        None where the backend cannot say (the ``models`` answer then leaves it out)."""
        return None

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """``text`` as the model's own token ids (thread-safe: called beside a running generation)."""
        raise BackendError("this model's backend cannot tokenize", code=ERR_BAD_REQUEST)

    def detokenize(self, tokens: list[int]) -> str:
        raise BackendError("this model's backend cannot detokenize", code=ERR_BAD_REQUEST)


def create_backend(name: str) -> Backend:
    target = BACKENDS.get(name)
    if target is None:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is not available: {exc}") from None
    cls = getattr(module, cls_name)
    backend: Backend = cls()
    return backend


class BackendError(RuntimeServiceError):
    """A backend failed to load a model or to run a request.

    ``code`` is the protocol error code the daemon answers with; ``param`` the request field at
    fault, if one is (it travels in the error frame, and the proxy names it in its 400).
    """

    def __init__(self, message: str, code: str = "backend_error", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param

    def frame(self) -> dict[str, str]:
        body = {"code": self.code, "message": str(self)}
        if self.param is not None:
            body["param"] = self.param
        return body


_WARM_UP = GenerateSpec("warm-up", ({"role": "user", "content": "Hi"},), None, SamplingParams(max_tokens=1))


def _discard(text: str, final: bool = False) -> None:
    pass


def _never() -> bool:
    return False
