"""Speech's pure parts (issue 11): format conversion, audio durations, upstream error mapping."""

from __future__ import annotations

import itertools
import math
import struct
from pathlib import Path

import pytest

from proxy.errors import ApiError
from proxy.speech.audio import AudioFormatError, WavToPcm, audio_duration, converter, upload_format
from proxy.speech.catalog import SpeechModel
from proxy.speech.inference import upstream_error
from proxy.speech.resample import PcmResampler
from tests.speech_standin import make_wav

MODEL = SpeechModel("tts-demo", "tts", "acme/tts", running=True, token="hf_secretsecret")


@pytest.mark.parametrize("step", [1, 7, 44, 4096])
def test_wav_to_pcm_cuts_the_header_whatever_the_chunking(step: int) -> None:
    wav = make_wav(0.1, rate=24000)  # already OpenAI's rate: the samples pass as they are
    convert = WavToPcm()
    out = b"".join(convert.feed(wav[i : i + step]) for i in range(0, len(wav), step)) + convert.finish()
    assert out == wav[44:]
    assert convert.headers == {"x-audio-sample-rate": "24000", "x-audio-channels": "1"}


@pytest.mark.parametrize("step", [1, 3, 7, 44, 4096])
def test_wav_at_another_rate_becomes_24_khz_the_same_whatever_the_chunking(step: int) -> None:
    wav = make_wav(0.1, rate=8000)
    whole = WavToPcm()
    expected = whole.feed(wav) + whole.finish()
    convert = WavToPcm()
    out = b"".join(convert.feed(wav[i : i + step]) for i in range(0, len(wav), step)) + convert.finish()
    assert out == expected
    assert len(out) // 2 in range(3 * 800 - 3, 3 * 800 + 1)  # 0.1 s at 24 kHz
    assert convert.headers == {"x-audio-sample-rate": "24000", "x-audio-channels": "1"}


def pcm(*samples: int) -> bytes:
    return struct.pack(f"<{len(samples)}h", *samples)


def unpcm(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def test_upsampling_interpolates_between_neighbours() -> None:
    r = PcmResampler(8000, 1)  # three output samples per input sample
    out = unpcm(r.feed(pcm(0, 300, 600, -300)) + r.finish())
    assert out == [0, 100, 200, 300, 400, 500, 600, 300, 0, -300, -300, -300]  # the end held for its time


def test_stereo_is_averaged_and_downsampled() -> None:
    r = PcmResampler(48000, 2)  # every other frame, channels averaged
    frames = pcm(100, 300, -100, -300, 1000, 2000, 7, 9)
    assert unpcm(r.feed(frames[:5]) + r.feed(frames[5:]) + r.finish()) == [200, 1500]


def test_a_tone_keeps_its_pitch_and_duration() -> None:
    rate, seconds = 16000, 0.5
    samples = [int(12000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(rate * seconds))]
    r = PcmResampler(rate, 1)
    out = unpcm(r.feed(pcm(*samples)) + r.finish())
    assert abs(len(out) / 24000 - seconds) < 0.001
    rising = sum(1 for a, b in itertools.pairwise(out) if a < 0 <= b)  # zero crossings upwards: one per period
    assert abs(rising - 440 * seconds) <= 1
    expected = [12000 * math.sin(2 * math.pi * 440 * i / 24000) for i in range(len(out))]
    inside = zip(out[:-2], expected[:-2], strict=True)  # the last two hold the final sample: not the tone
    assert max(abs(a - b) for a, b in inside) < 12000 * 0.01  # within 1% of the true tone


def test_wav_to_pcm_refuses_what_is_not_16_bit_pcm() -> None:
    wav = bytearray(make_wav(0.01))
    struct.pack_into("<H", wav, 34, 8)  # bits per sample
    with pytest.raises(AudioFormatError) as err:
        WavToPcm().feed(bytes(wav))
    assert err.value.status == 400 and err.value.param == "response_format"
    with pytest.raises(AudioFormatError):
        WavToPcm().feed(b"OggS" + b"\0" * 40)


def test_formats_pass_through_convert_or_are_refused_by_name() -> None:
    assert converter("audio/flac", "flac", "m").content_type == "audio/flac"
    assert converter("audio/x-wav", None, "m").content_type == "audio/x-wav"  # no format asked: its own
    assert isinstance(converter("audio/wav", "pcm", "m"), WavToPcm)
    with pytest.raises(AudioFormatError) as err:
        converter("audio/flac", "mp3", "m")
    assert err.value.param == "response_format" and "it can give flac" in err.value.message
    with pytest.raises(AudioFormatError) as bad:
        converter("application/json", None, "m")
    assert bad.value.status == 502


def test_upload_formats_by_name_or_media_type() -> None:
    assert upload_format("talk.MP3", None) == "mp3"
    assert upload_format("blob", "audio/x-wav") == "wav"
    with pytest.raises(ApiError) as err:
        upload_format("notes.txt", "audio/wav")
    assert err.value.param == "file" and "Supported formats" in err.value.message


def test_durations_of_wav_and_flac(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(make_wav(1.5, rate=8000))
    assert audio_duration(wav, "wav") == 1.5
    # A FLAC STREAMINFO block: 44100 Hz, 2 channels, 16 bits, 88200 samples = 2 s.
    info = bytearray(34)
    packed = (44100 << 44) | (1 << 41) | (15 << 36) | 88200
    info[10:18] = packed.to_bytes(8, "big")
    flac = tmp_path / "a.flac"
    flac.write_bytes(b"fLaC" + bytes([0x80, 0, 0, 34]) + bytes(info))
    assert audio_duration(flac, "flac") == 2.0
    junk = tmp_path / "b.wav"
    junk.write_bytes(b"not a wav")
    assert audio_duration(junk, "wav") is None
    assert audio_duration(junk, "mp3") is None


def test_upstream_errors_become_openai_errors_without_the_token() -> None:
    loading = upstream_error(
        503, b'{"error": "Model acme/tts is currently loading", "estimated_time": 4.2}', None, MODEL
    )
    assert (loading.status, loading.code, loading.headers["retry-after"]) == (503, "model_loading", "5")
    refused = upstream_error(401, b'{"error": "Invalid credentials"}', None, MODEL)
    assert refused.status == 502 and "secret" not in refused.message and "token" in refused.message
    passed = upstream_error(422, b'{"error": ["inputs must be a string"]}', None, MODEL)
    assert (passed.status, passed.message) == (422, "Hugging Face's inference service: inputs must be a string")
    broken = upstream_error(500, b"<html>oops</html>", None, MODEL)
    assert broken.status == 502 and "oops" in broken.message
    assert "hf_secret" not in repr(MODEL)


def test_speech_settings_are_read_and_checked() -> None:
    from proxy.errors import SettingsError
    from proxy.settings import load_settings

    s = load_settings({})
    assert (s.hf_inference_provider, s.hf_inference_url) == (
        "hf-inference",
        "https://router.huggingface.co/hf-inference",
    )
    assert s.max_audio_bytes == 25 * 1024 * 1024 and s.hf_inference_timeout == 120.0
    s = load_settings({"LLMSERVER_HF_INFERENCE_URL": "http://mirror:8080/", "LLMSERVER_MAX_AUDIO_BYTES": "4096"})
    assert (s.hf_inference_url, s.max_audio_bytes) == ("http://mirror:8080", 4096)
    for name, value in [
        ("LLMSERVER_HF_INFERENCE_URL", "ftp://x"),
        ("LLMSERVER_HF_INFERENCE_PROVIDER", "fal-ai"),
        ("LLMSERVER_HF_INFERENCE_TIMEOUT", "0"),
        ("LLMSERVER_MAX_AUDIO_BYTES", "lots"),
    ]:
        with pytest.raises(SettingsError, match=name):
            load_settings({name: value})
