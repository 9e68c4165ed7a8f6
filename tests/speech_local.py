"""Helpers for the local speech tests (issue 23): the packaged models' specs, WAV and other containers
made with PyAV, and the word error rate."""

from __future__ import annotations

import io
import re
import wave
from collections.abc import Sequence

from runtime.api.audio import AudioChunk
from runtime.backends.speech.packages import WHISPER_PACKAGE, voice_package_path

PIPER_SPEC = f"piper=piper:{voice_package_path('joe')},voices=joe"
WHISPER_SPEC = f"whisper=whisper:{WHISPER_PACKAGE.path().parent},n_threads=2,max_audio_seconds=60"
SPEECH_MODELS = ("piper", "whisper")

SENTENCE = "The quick brown fox jumps over the lazy dog."
TWO_SENTENCES = "The quick brown fox jumps over the lazy dog. Then it runs far away into the green forest."
PARAGRAPH = (
    "Good morning and welcome to the board. "
    "Today we will talk about the weather in the mountains. "
    "The wind is strong and the air is cold. "
    "Snow is falling on the high roads since last night. "
    "Please drive slowly and carry warm clothes. "
    "We will send another message in the afternoon."
)


def wav_of(chunks: Sequence[AudioChunk]) -> bytes:
    """The chunks joined into one WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(chunks[0].channels)
        wav.setsampwidth(2)
        wav.setframerate(chunks[0].sample_rate)
        wav.writeframes(b"".join(c.pcm for c in chunks))
    return out.getvalue()


def encode(chunks: Sequence[AudioChunk], container: str, codec: str) -> bytes:
    """The chunks encoded with PyAV (``mp3``/``libmp3lame``, ``ogg``/``libopus``, ``flac``, ``ipod``/``aac``)."""
    import av
    import numpy as np

    rate = chunks[0].sample_rate
    samples = np.frombuffer(b"".join(c.pcm for c in chunks), np.int16).reshape(1, -1)
    out = io.BytesIO()
    with av.open(out, "w", format=container) as box:
        stream = box.add_stream(codec, rate=48000 if codec == "libopus" else rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            box.mux(packet)
    return out.getvalue()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, heard: str) -> float:
    """Word-level edit distance over the reference's length."""
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))
