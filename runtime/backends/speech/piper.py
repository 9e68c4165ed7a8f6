"""The ``piper`` backend: text to speech with Piper voices, each run as its own program.

A model is one or more voices. ``path`` is the first voice's ``.onnx`` (its ``.onnx.json`` beside
it); the ``voices`` parameter lists them all, ``|``- or ``,``-separated, each either the name of a voice
package (``runtime.backends.speech.packages``) or ``NAME:PATH`` to a Piper voice file. Without it the
model has the one voice at ``path``, named by the ``voice`` parameter or after the file
(``en_US-joe-medium.onnx`` -> ``joe``).

A request's text is cut into sentences (``sentences``); each is sent to the voice's Piper program
(``piper_process``) and its audio emitted as soon as it is made, so the first sentence is heard
while the rest is being synthesised. ``speed`` is Piper's length scale (the voice's own divided by
the speed), not a resampling: a program per voice and speed, the least recently used beyond
:data:`EXTRA_PROGRAMS` ended. Cancellation is looked at every few milliseconds, mid-sentence too.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.api.audio import AudioChunk, SpeakSpec
from runtime.api.models import ModelConfig
from runtime.api.protocol import ERR_BAD_REQUEST, ERR_LOAD_FAILED
from runtime.backends.base import BackendError, Cancelled, EmitAudio, Spec, SpeechOutcome
from runtime.backends.speech.packages import SPEECH_EXTRA, voice_package_path
from runtime.backends.speech.piper_process import PiperExitedError, PiperProcess, speakable
from runtime.backends.speech.sentences import split_sentences
from runtime.backends.speech.speechbase import SpeechBackend

log = logging.getLogger(__name__)

EXTRA_PROGRAMS = 1  # programs kept beyond one per voice (for requests at another speed)
_FOLDER = "llmserver-piper-"  # + the daemon's pid: where its Piper programs write their files
_LOAD_LINE = "Ready."  # said once at load: the voice proves it works, and its first costs are paid


@dataclass(frozen=True)
class Voice:
    name: str
    model: Path
    config: Path
    sample_rate: int
    length_scale: float  # the voice's own (1 = its natural pace)


class PiperBackend(SpeechBackend):
    kind = "tts"

    def __init__(self) -> None:
        self._voices: dict[str, Voice] = {}
        self._programs: OrderedDict[tuple[str, float], PiperProcess] = OrderedDict()
        self._folder: Path | None = None

    def load(self, config: ModelConfig) -> None:
        if importlib.util.find_spec("piper") is None:
            raise BackendError(f"Piper (piper-tts) is not installed: {SPEECH_EXTRA}", ERR_LOAD_FAILED)
        self._voices = {v.name: v for v in _voices(config)}
        _sweep_folders()
        self._folder = Path(tempfile.mkdtemp(prefix=f"{_FOLDER}{os.getpid()}-{config.name}-"))
        try:
            for voice in self._voices.values():
                self._say_once(voice)
        except BackendError as exc:
            self.unload()
            raise BackendError(f"{config.name}: {exc}", ERR_LOAD_FAILED) from None

    def _say_once(self, voice: Voice) -> None:
        sound = self._program(voice, 1.0).say(_LOAD_LINE, lambda: False)
        if sound is None or not sound.pcm:
            raise BackendError(f"voice {voice.name} said nothing")

    def warm(self) -> None:
        """Nothing left to pay: :meth:`load` already had every voice say a word."""

    def admit(self, spec: Spec) -> None:
        super().admit(spec)
        assert isinstance(spec, SpeakSpec)
        self._voice(spec.voice)
        if not speakable(spec.input):
            raise BackendError("input has nothing to speak (no letter or digit)", ERR_BAD_REQUEST, "input")

    def _voice(self, name: str | None) -> Voice:
        if name is None:
            return next(iter(self._voices.values()))
        voice = self._voices.get(name)
        if voice is None:
            known = ", ".join(self._voices)
            raise BackendError(f"voice {name!r} is not one of this model's voices: {known}", ERR_BAD_REQUEST, "voice")
        return voice

    def info(self) -> dict[str, Any]:
        """Called on the daemon's main thread while the worker's may start or end programs: the dicts
        are copied in one step (``list`` of a dict view runs in C, under the GIL) before being read."""
        voices, programs = list(self._voices.values()), list(self._programs.items())
        return {
            "voices": [v.name for v in voices],
            "sample_rate": voices[0].sample_rate if voices else None,
            "programs": [{"voice": voice, "length_scale": scale, "pid": p.pid} for (voice, scale), p in programs],
        }

    def speak(self, spec: SpeakSpec, emit: EmitAudio, cancelled: Cancelled) -> SpeechOutcome:
        voice = self._voice(spec.voice)
        program = self._program(voice, spec.speed)
        started = time.perf_counter()
        first_ms, seconds, sentences, finish = 0.0, 0.0, 0, "stop"
        for line in (s for s in split_sentences(spec.input) if speakable(s)):
            try:
                sound = None if cancelled() else program.say(line, cancelled)
            except PiperExitedError:
                self._drop(program)
                raise
            if sound is None:
                finish = "aborted"
                break
            chunk = AudioChunk(sound.pcm, sound.sample_rate, 1, line)
            emit(chunk)
            first_ms = first_ms or (time.perf_counter() - started) * 1000
            seconds += chunk.seconds
            sentences += 1
        synth_ms = (time.perf_counter() - started) * 1000
        return SpeechOutcome(finish, seconds, voice.sample_rate, sentences, first_ms, synth_ms)

    def _program(self, voice: Voice, speed: float) -> PiperProcess:
        """The running program for ``voice`` at ``speed`` (started now if there is none)."""
        key = (voice.name, round(voice.length_scale / speed, 4))
        program = self._programs.get(key)
        if program is not None and program.alive():
            self._programs.move_to_end(key)
            return program
        if program is not None:
            self._drop(program)
        assert self._folder is not None
        program = PiperProcess(voice.model, voice.config, key[1], self._folder)
        program.start()
        self._programs[key] = program
        while len(self._programs) > len(self._voices) + EXTRA_PROGRAMS:
            _, oldest = self._programs.popitem(last=False)
            oldest.close()
        return program

    def _drop(self, program: PiperProcess) -> None:
        for key, known in list(self._programs.items()):
            if known is program:
                del self._programs[key]
        program.close(wait=0)

    def unload(self) -> None:
        programs, self._programs = list(self._programs.values()), OrderedDict()
        for program in programs:
            program.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _sweep_folders() -> None:
    """Remove the folders of daemons that died without unloading (SIGKILL): named after their pid."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_FOLDER}*"):
        pid = folder.name[len(_FOLDER) :].partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def _voices(config: ModelConfig) -> list[Voice]:
    listed = config.params.get("voices")
    if listed is None:
        name = str(config.params.get("voice") or _name_from_file(Path(config.path)))
        return [_voice_at(name, Path(config.path))]
    entries = listed if isinstance(listed, list) else re.split(r"[|,]", str(listed))
    voices = []
    for entry in (str(e).strip() for e in entries if str(e).strip()):
        name, sep, path = entry.partition(":")
        voices.append(_voice_at(name, Path(path) if sep else voice_package_path(name)))
    if not voices:
        raise BackendError("'voices' names no voice", ERR_LOAD_FAILED)
    return voices


def _name_from_file(model: Path) -> str:
    """Piper's files are named LANG_REGION-NAME-QUALITY.onnx: the NAME part, else the stem."""
    parts = model.name.removesuffix(".onnx").split("-")
    return parts[1] if len(parts) == 3 else model.stem


def _voice_at(name: str, model: Path) -> Voice:
    config = model.with_name(model.name + ".json")
    try:
        settings = json.loads(config.read_text())
        rate = int(settings["audio"]["sample_rate"])
        scale = float(settings.get("inference", {}).get("length_scale", 1.0))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"voice {name!r}: no usable Piper config at {config}: {exc}", ERR_LOAD_FAILED) from None
    if not model.is_file():
        raise BackendError(f"voice {name!r}: no Piper voice file at {model}", ERR_LOAD_FAILED)
    return Voice(name, model, config, rate, scale)
