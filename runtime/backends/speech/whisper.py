"""The ``whisper`` backend: speech to text with faster-whisper (CTranslate2), int8 on the CPU.

``path`` is a CTranslate2 Whisper model folder (``model.bin``, ``config.json``, ``tokenizer.json``...)
or its ``model.bin``; parameters ``compute_type`` (default ``int8``), ``n_threads`` (0: CTranslate2's
choice), ``beam_size`` (5) and ``max_audio_seconds`` (7200). An upload in any format FFmpeg reads is
decoded with PyAV (which comes with faster-whisper) to 16 kHz mono in the worker thread (``decode``);
one that is not audio, or longer than ``max_audio_seconds``, is a ``bad_request`` naming the file.
Segments carry their timestamps, and words theirs when asked. A request is looked at for cancellation
between segments.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from runtime.api.audio import TranscribeSpec
from runtime.api.models import ModelConfig
from runtime.api.protocol import ERR_BAD_REQUEST, ERR_LOAD_FAILED
from runtime.backends.base import BackendError, Cancelled, Spec
from runtime.backends.speech.decode import SAMPLE_RATE, decode_upload
from runtime.backends.speech.packages import SPEECH_EXTRA
from runtime.backends.speech.speechbase import SpeechBackend

log = logging.getLogger(__name__)

MAX_AUDIO_SECONDS = 7200.0  # two hours: 460 MB of samples while they are heard
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # temperature 0: raised while a segment decodes badly


class WhisperBackend(SpeechBackend):
    kind = "stt"

    def __init__(self) -> None:
        self._model: Any = None
        self._languages: tuple[str, ...] = ()
        self._beam_size = 5
        self._max_seconds = MAX_AUDIO_SECONDS

    def weights(self, config: ModelConfig) -> str:
        path = Path(config.path)
        return str(path / "model.bin") if path.is_dir() else config.path

    def load(self, config: ModelConfig) -> None:
        if importlib.util.find_spec("faster_whisper") is None:
            raise BackendError(f"faster-whisper is not installed: {SPEECH_EXTRA}", ERR_LOAD_FAILED)
        from faster_whisper import WhisperModel

        folder = Path(self.weights(config)).parent
        params = config.params
        self._beam_size = int(params.get("beam_size", 5))
        self._max_seconds = float(params.get("max_audio_seconds", MAX_AUDIO_SECONDS))
        try:
            self._model = WhisperModel(
                str(folder),
                device="cpu",
                compute_type=str(params.get("compute_type", "int8")),
                cpu_threads=int(params.get("n_threads", 0)),
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 and the tokenizer raise their own types
            raise BackendError(f"could not load the Whisper model in {folder}: {exc}", ERR_LOAD_FAILED) from None
        self._languages = tuple(self._model.supported_languages)
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # not a line per request

    def warm(self) -> None:
        """One second of silence through the encoder and decoder: their buffers are allocated now."""
        import numpy as np

        segments, _ = self._model.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), language=self._languages[0])
        list(segments)

    @property
    def english_only(self) -> bool:
        return self._languages == ("en",)

    def info(self) -> dict[str, Any]:
        return {"languages": list(self._languages), "sample_rate": SAMPLE_RATE}

    def admit(self, spec: Spec) -> None:
        super().admit(spec)
        assert isinstance(spec, TranscribeSpec)
        if spec.language is not None and spec.language not in self._languages:
            hears = "English only" if self.english_only else f"these languages: {', '.join(self._languages)}"
            raise BackendError(
                f"language {spec.language!r} is not one this model hears ({hears})", ERR_BAD_REQUEST, "language"
            )
        if spec.task == "translate" and self.english_only:
            raise BackendError("this model hears English only: it has nothing to translate", ERR_BAD_REQUEST, "model")

    def transcribe(self, spec: TranscribeSpec, cancelled: Cancelled) -> dict[str, Any]:
        started = time.perf_counter()
        audio = decode_upload(spec.audio, self._max_seconds)
        decoded = time.perf_counter()
        segments, info = self._model.transcribe(
            audio,
            language=spec.language or (self._languages[0] if self.english_only else None),
            task=spec.task,
            beam_size=self._beam_size,
            temperature=list(FALLBACK_TEMPERATURES) if spec.temperature == 0 else spec.temperature,
            initial_prompt=spec.prompt,
            word_timestamps=spec.word_timestamps,
        )
        out = []
        for segment in segments:
            out.append(_segment(segment, spec.word_timestamps))
            if cancelled():
                break
        return {
            "text": "".join(s["text"] for s in out).strip(),
            "language": info.language,
            "duration": round(float(info.duration), 3),
            "segments": out,
            "perf": {
                "decode_ms": round((decoded - started) * 1000, 3),
                "transcribe_ms": round((time.perf_counter() - decoded) * 1000, 3),
            },
        }

    def unload(self) -> None:
        self._model = None  # CTranslate2 frees the weights with the last reference


def _segment(segment: Any, words: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": int(segment.id),
        "seek": int(segment.seek),
        "start": round(float(segment.start), 3),
        "end": round(float(segment.end), 3),
        "text": str(segment.text),
        "tokens": [int(t) for t in segment.tokens],
        "temperature": float(segment.temperature or 0.0),
        "avg_logprob": float(segment.avg_logprob),
        "compression_ratio": float(segment.compression_ratio),
        "no_speech_prob": float(segment.no_speech_prob),
    }
    if words:
        out["words"] = [
            {
                "word": str(w.word),
                "start": round(float(w.start), 3),
                "end": round(float(w.end), 3),
                "probability": round(float(w.probability), 4),
            }
            for w in segment.words or ()
        ]
    return out
