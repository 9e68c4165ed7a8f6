"""Issue 23: local text-to-speech and transcription in the runtime daemon, for real: the daemon as a
subprocess over ZeroMQ, Piper's own program with the packaged joe voice, faster-whisper with the
packaged Whisper tiny.en. Nothing here is faked."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.api.audio import MAX_SPEAK_CHARS, AudioChunk
from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeRequestError
from runtime.api.models import ModelConfig, parse_model_spec
from runtime.api.protocol import SamplingParams
from runtime.api.speech import speak, transcribe
from runtime.backends.speech.packages import VOICE_PACKAGES
from tests.harness import Daemon, clean_env
from tests.speech_local import (
    PARAGRAPH,
    PIPER_SPEC,
    SENTENCE,
    SPEECH_MODELS,
    TWO_SENTENCES,
    WHISPER_SPEC,
    encode,
    wav_of,
    word_error_rate,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def speech_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with the packaged voice and transcriber, one request waiting per model at most."""
    d = tmp_path_factory.mktemp("speech-daemon")
    sock_dir = Path(f"/tmp/llms-speech-{os.getpid()}")
    sock_dir.mkdir(parents=True, exist_ok=True)
    env = clean_env(d)
    env["LLMSERVER_RUNTIME_QUEUE_DEPTH"] = "1"
    args = ["--no-demo", "--model", PIPER_SPEC, "--model", WHISPER_SPEC]
    daemon = Daemon(f"ipc://{sock_dir}/rt.sock", args, env, d / "daemon.log")
    daemon.start(ready_models=SPEECH_MODELS, timeout=110)
    yield daemon
    daemon.terminate()
    shutil.rmtree(sock_dir, ignore_errors=True)


async def spoken(client: RuntimeClient, text: str, **kw: Any) -> tuple[list[AudioChunk], dict[str, Any]]:
    chunks = []
    async with speak(client, "piper", text, **kw) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    assert stream.done is not None
    return chunks, stream.done


async def model(client: RuntimeClient, name: str) -> dict[str, Any]:
    return next(m.to_wire() for m in await client.models() if m.name == name)


async def program(client: RuntimeClient, scale: float = 1.0) -> int:
    """The pid of the joe voice's Piper program at length scale ``scale``."""
    programs = (await model(client, "piper"))["programs"]
    (pid,) = [p["pid"] for p in programs if p["voice"] == "joe" and p["length_scale"] == scale]
    return int(pid)


async def test_speak_a_sentence_and_transcribe_it_back(speech_daemon: Daemon) -> None:
    """issue 23: each sentence's audio comes as its own frame; Whisper hears the words spoken."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        chunks, done = await spoken(client, TWO_SENTENCES)
        heard = await transcribe(client, "whisper", wav_of(chunks), word_timestamps=True)
    assert [c.text for c in chunks] == [
        "The quick brown fox jumps over the lazy dog.",
        "Then it runs far away into the green forest.",
    ]
    assert {c.sample_rate for c in chunks} == {22050} and all(c.seconds > 1 for c in chunks)
    assert done["sentences"] == 2 and done["characters"] == len(TWO_SENTENCES)
    assert done["audio_seconds"] == pytest.approx(sum(c.seconds for c in chunks), abs=0.01)
    assert word_error_rate(TWO_SENTENCES, heard["text"]) <= 0.2, heard["text"]
    assert heard["language"] == "en"
    assert heard["duration"] == pytest.approx(done["audio_seconds"], abs=0.05)
    segment = heard["segments"][0]
    assert 0 <= segment["start"] < segment["end"] <= heard["duration"] + 0.1
    starts = [w["start"] for s in heard["segments"] for w in s["words"]]
    assert len(starts) >= 15 and starts == sorted(starts)


async def test_first_audio_arrives_before_the_text_is_spoken(speech_daemon: Daemon) -> None:
    """issue 23: audio streams sentence by sentence: the first long before the whole paragraph."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        started = time.perf_counter()
        arrivals = []
        async with speak(client, "piper", PARAGRAPH) as stream:
            async for _ in stream:
                arrivals.append(time.perf_counter() - started)
    total = time.perf_counter() - started
    assert len(arrivals) == 6
    assert arrivals[0] < total / 2, (arrivals, total)
    assert stream.done is not None and stream.done["perf"]["first_audio_ms"] < stream.done["perf"]["synth_ms"] / 2


async def test_speed_is_the_engines_length_scale(speech_daemon: Daemon) -> None:
    """issue 23: speed 2 halves the length scale: the same words in about half the time."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        normal, _ = await spoken(client, SENTENCE)
        fast, _ = await spoken(client, SENTENCE, speed=2.0)
        heard = await transcribe(client, "whisper", wav_of(fast))
    ratio = sum(c.seconds for c in fast) / sum(c.seconds for c in normal)
    # Piper's phoneme durations are sampled (noise_w) and its pauses do not scale: 0.52-0.65 seen.
    assert 0.4 < ratio < 0.72, ratio
    assert {c.sample_rate for c in fast} == {22050}  # not resampled
    assert word_error_rate(SENTENCE, heard["text"]) <= 0.2, heard["text"]


async def test_a_voice_the_model_lacks_is_refused_naming_its_voices(speech_daemon: Daemon) -> None:
    """issue 23: refused before it is queued (no audio, no accepted), the voices named."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        stream = speak(client, "piper", SENTENCE, voice="alloy")
        with pytest.raises(RuntimeRequestError) as caught:
            await stream.admitted()
        assert caught.value.code == "bad_request" and caught.value.extra.get("param") == "voice"
        assert "'alloy'" in caught.value.message and "joe" in caught.value.message
        chunks, _ = await spoken(client, SENTENCE, voice="joe")
    assert chunks


async def test_requests_a_model_cannot_serve_are_refused_by_kind(speech_daemon: Daemon) -> None:
    """issue 23: a generate on a voice, a speak on a transcriber, text with nothing to say."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        with pytest.raises(RuntimeRequestError, match="text-to-speech model, not a text model"):
            async with client.generate("piper", prompt="Hi", params=SamplingParams(max_tokens=2)) as gen:
                await gen.admitted()
        with pytest.raises(RuntimeRequestError, match="speech-to-text model, not a text-to-speech model"):
            await spoken_by(client, "whisper", SENTENCE)
        with pytest.raises(RuntimeRequestError, match="nothing to speak"):
            await spoken(client, "... !!! ---")


async def spoken_by(client: RuntimeClient, name: str, text: str) -> None:
    async with speak(client, name, text) as stream:
        await stream.admitted()


@pytest.mark.parametrize(("container", "codec"), [("mp3", "libmp3lame"), ("ogg", "libopus"), ("flac", "flac")])
async def test_uploads_of_common_formats_are_decoded(speech_daemon: Daemon, container: str, codec: str) -> None:
    """issue 23: the daemon decodes any common format (PyAV), not WAV alone."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        chunks, _ = await spoken(client, SENTENCE)
        heard = await transcribe(client, "whisper", encode(chunks, container, codec))
    assert word_error_rate(SENTENCE, heard["text"]) <= 0.2, heard["text"]


async def test_transcription_options_and_bad_uploads(speech_daemon: Daemon) -> None:
    """issue 23: language, prompt and temperature are honoured; what cannot be is a bad_request naming the field."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        chunks, _ = await spoken(client, SENTENCE)
        heard = await transcribe(
            client, "whisper", wav_of(chunks), language="en", prompt="A fox and a dog.", temperature=0.2
        )
        assert word_error_rate(SENTENCE, heard["text"]) <= 0.2, heard["text"]
        assert {s["temperature"] for s in heard["segments"]} == {0.2}
        assert "words" not in heard["segments"][0]
        for options, param in (({"language": "fr"}, "language"), ({"task": "translate"}, "model")):
            with pytest.raises(RuntimeRequestError) as caught:
                await transcribe(client, "whisper", wav_of(chunks), **options)
            assert caught.value.code == "bad_request" and caught.value.extra.get("param") == param
        for junk in (b"this is not audio at all" * 100, os.urandom(50_000)):
            with pytest.raises(RuntimeRequestError) as caught:
                await transcribe(client, "whisper", junk)
            assert caught.value.code == "bad_request" and caught.value.extra.get("param") == "file"
            assert "not audio" in caught.value.message
        # 70 s of near silence: a small FLAC, but past the model's 60 s limit (max_audio_seconds=60)
        long = [AudioChunk(b"\x01\x00" * 22050 * 70, 22050)]
        with pytest.raises(RuntimeRequestError, match="longer than 60 seconds") as caught:
            await transcribe(client, "whisper", encode(long, "flac", "flac"))
        assert caught.value.code == "bad_request" and caught.value.extra.get("param") == "file"
        again = await transcribe(client, "whisper", wav_of(chunks))  # unharmed
    assert word_error_rate(SENTENCE, again["text"]) <= 0.2


async def test_abort_mid_synthesis_stops_the_work(speech_daemon: Daemon) -> None:
    """issue 23: a client that leaves after the first sentence stops Piper between (or within) sentences;
    the next request hears only its own words."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        async with speak(client, "piper", PARAGRAPH * 3) as stream:
            async for _ in stream:
                break  # leaving the stream aborts the request on the daemon
        stopped_by = time.monotonic() + 3
        while (await model(client, "piper"))["running"]:
            assert time.monotonic() < stopped_by, "the aborted synthesis went on"
            await asyncio.sleep(0.05)
        chunks, done = await spoken(client, SENTENCE)
        heard = await transcribe(client, "whisper", wav_of(chunks))
    assert [c.text for c in chunks] == [SENTENCE] and done["sentences"] == 1
    assert word_error_rate(SENTENCE, heard["text"]) <= 0.2, heard["text"]


async def test_a_piper_crash_fails_its_request_not_the_daemon(speech_daemon: Daemon) -> None:
    """issue 23: Piper killed mid-request: that request is a backend_error, the next one gets a new Piper."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        before = await program(client)
        with pytest.raises(RuntimeRequestError) as caught:
            async with speak(client, "piper", PARAGRAPH) as stream:
                async for _ in stream:
                    if Path(f"/proc/{before}").exists():  # once, after the first sentence
                        os.kill(before, signal.SIGKILL)
        assert caught.value.code == "backend_error" and "exited" in caught.value.message
        assert speech_daemon.alive()
        chunks, _ = await spoken(client, SENTENCE)
        after = await program(client)
    assert chunks and after != before


async def test_a_full_queue_is_busy(speech_daemon: Daemon) -> None:
    """issue 23: speech requests queue like text (depth 1 here): behind a running one, one waits and the
    next is busy at once."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        running = speak(client, "piper", PARAGRAPH)
        assert await running.admitted() == 0
        await running.__anext__()  # its first sentence is out: it runs, the queue is empty
        waiting, refused = speak(client, "piper", SENTENCE), speak(client, "piper", SENTENCE)
        assert await waiting.admitted() == 1
        with pytest.raises(RuntimeRequestError) as caught:
            await refused.admitted()
        assert caught.value.code == "busy"
        for stream in (running, waiting, refused):
            await stream.aclose()


async def test_speech_models_report_in_the_model_list(speech_daemon: Daemon) -> None:
    """issue 23: kind, voices or languages, state."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        piper, whisper = await model(client, "piper"), await model(client, "whisper")
    assert (piper["kind"], piper["state"], piper["voices"], piper["sample_rate"]) == ("tts", "ready", ["joe"], 22050)
    assert (whisper["kind"], whisper["state"], whisper["languages"]) == ("stt", "ready", ["en"])


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_unload_frees_and_load_again(make_daemon: Any) -> None:
    """issue 23: unloading a voice ends its Piper; unloading Whisper gives its memory back; both load again."""
    daemon = make_daemon("--no-demo", "--model", PIPER_SPEC, "--model", WHISPER_SPEC)
    daemon.start(ready_models=SPEECH_MODELS, timeout=110)
    async with RuntimeClient(daemon.endpoint) as client:
        piper = await program(client)
        await client.unload("piper")
        await _until(lambda: not Path(f"/proc/{piper}").exists(), "the voice's Piper program outlived its model")
        loaded_rss = _rss(daemon.proc.pid)
        await client.unload("whisper")
        freed = f"unloading Whisper did not give back 30 MiB of the daemon's {loaded_rss / 2**20:.0f} MiB"
        await _until(lambda: loaded_rss - _rss(daemon.proc.pid) > 30 * 2**20, freed)
        assert [m.name for m in await client.models()] == []
        await client.load(parse_model_spec(PIPER_SPEC), timeout=110)
        await client.load(parse_model_spec(WHISPER_SPEC), timeout=110)
        chunks, _ = await spoken(client, SENTENCE)
        heard = await transcribe(client, "whisper", wav_of(chunks))
    assert word_error_rate(SENTENCE, heard["text"]) <= 0.2


async def _until(condition: Callable[[], bool], message: str, within: float = 15.0) -> None:
    end = time.monotonic() + within
    while not condition():
        assert time.monotonic() < end, message
        await asyncio.sleep(0.05)


async def test_a_killed_daemon_leaves_no_piper_behind(make_daemon: Any) -> None:
    """issue 23: a daemon killed with SIGKILL: its Piper programs end (their input closes) and the next
    daemon's load removes the folder they wrote into."""
    first = make_daemon("--no-demo", "--model", PIPER_SPEC).start(ready_models=("piper",), timeout=110)
    async with RuntimeClient(first.endpoint) as client:
        piper = await program(client)
    folders = list(Path("/tmp").glob(f"llmserver-piper-{first.proc.pid}-*"))
    assert len(folders) == 1
    first.kill()
    await _until(lambda: not Path(f"/proc/{piper}").exists(), "Piper outlived its daemon")
    second = make_daemon("--no-demo", "--model", PIPER_SPEC).start(ready_models=("piper",), timeout=110)
    assert second.alive() and not folders[0].exists()


async def test_bad_speech_requests_are_refused_on_the_wire(speech_daemon: Daemon) -> None:
    """issue 23: empty text, a megabyte of text, a speed out of range, a transcribe without its audio
    frame: each a bad_request naming the field, before any work; the daemon unharmed."""
    async with RuntimeClient(speech_daemon.endpoint) as client:
        for text, kw, says in (
            ("   ", {}, "'input' must be a non-empty string"),
            ("word " * 200_000, {}, f"longer than {MAX_SPEAK_CHARS} characters"),
            (SENTENCE, {"speed": 4.5}, "'speed' must be a number from 0.25 to 4"),
        ):
            with pytest.raises(RuntimeRequestError, match=says) as caught:
                await spoken(client, text, **kw)
            assert caught.value.code == "bad_request"
        with pytest.raises(RuntimeRequestError, match="second frame") as caught:
            await client.call("transcribe", {"model": "whisper"})
        assert caught.value.code == "bad_request"
        chunks, _ = await spoken(client, SENTENCE)
    assert chunks


async def test_a_voice_piper_cannot_open_fails_its_load_with_pipers_words(
    speech_daemon: Daemon, tmp_path: Path
) -> None:
    """issue 23: a broken voice file: the load fails with what Piper said; the daemon serves on."""
    broken = tmp_path / "en_US-broken-medium.onnx"
    broken.write_bytes(b"not an onnx model" * 100)
    config = VOICE_PACKAGES["joe"].path().with_name("en_US-joe-medium.onnx.json")
    (tmp_path / "en_US-broken-medium.onnx.json").write_bytes(config.read_bytes())
    async with RuntimeClient(speech_daemon.endpoint) as client:
        with pytest.raises(RuntimeRequestError) as caught:
            await client.load(ModelConfig("broken", "piper", str(broken)), timeout=110)
        assert caught.value.code == "load_failed"
        assert "Piper program for en_US-broken-medium.onnx exited" in caught.value.message
        assert "broken" not in [m.name for m in await client.models() if m.state != "failed"]
        chunks, _ = await spoken(client, SENTENCE)
    assert chunks and not list(tmp_path.glob("*.wav"))
