"""Issue 23: the speech ops' wire format (``runtime.api.audio``) and the daemon's request with a payload frame."""

from __future__ import annotations

import pytest

from runtime.api.audio import (
    MAX_AUDIO_BYTES,
    AudioChunk,
    SpeakSpec,
    TranscribeSpec,
    chunk_from_body,
    chunk_to_body,
    parse_speak,
    parse_transcribe,
    speak_to_wire,
    transcribe_to_wire,
)
from runtime.api.protocol import ProtocolError, Request, decode_request, encode_request


def test_speak_and_transcribe_round_trip_the_wire() -> None:
    spec = SpeakSpec("piper", "Hello.", "joe", 1.5)
    assert parse_speak(speak_to_wire(spec)) == spec
    assert parse_speak({"model": "piper", "input": "Hi"}) == SpeakSpec("piper", "Hi")
    heard = TranscribeSpec("whisper", b"RIFF....", "en", "names", 0.4, True, "translate")
    assert parse_transcribe(transcribe_to_wire(heard), heard.audio) == heard
    chunk = AudioChunk(b"\x01\x00" * 22050, 22050, 1, "Hello.")
    assert chunk_from_body(chunk_to_body(chunk)) == chunk and chunk.seconds == 1.0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"model": "p", "input": ""}, "'input'"),
        ({"model": "p", "input": 3}, "'input'"),
        ({"model": "", "input": "Hi"}, "'model'"),
        ({"model": "p", "input": "Hi", "speed": 0.1}, "'speed'"),
        ({"model": "p", "input": "Hi", "speed": True}, "'speed'"),
        ({"model": "p", "input": "Hi", "voice": 7}, "'voice'"),
    ],
)
def test_bad_speak_bodies(body: dict[str, object], says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        parse_speak(body)


@pytest.mark.parametrize(
    ("body", "audio", "says"),
    [
        ({"model": "w"}, b"", "second frame"),
        ({"model": "w", "temperature": 1.5}, b"x", "'temperature'"),
        ({"model": "w", "word_timestamps": "yes"}, b"x", "'word_timestamps'"),
        ({"model": "w", "task": "summarise"}, b"x", "'task'"),
        ({"model": "w", "language": 1}, b"x", "'language'"),
    ],
)
def test_bad_transcribe_bodies(body: dict[str, object], audio: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        parse_transcribe(body, audio)


def test_an_upload_past_the_limit_is_refused_before_decoding() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return MAX_AUDIO_BYTES + 1

    with pytest.raises(ProtocolError, match="larger than"):
        parse_transcribe({"model": "w"}, Huge(b"x"))


def test_a_request_carries_its_payload_frame() -> None:
    req = decode_request(encode_request(Request("1", "transcribe", 1.0, {"model": "w"})), b"audio")
    assert (req.op, req.body, req.payload) == ("transcribe", {"model": "w"}, b"audio")
    with pytest.raises(ProtocolError, match="not base64"):
        chunk_from_body({"pcm": "%%%", "sample_rate": 22050})
