"""The speech endpoints (issue 11): /v1/audio/speech and /v1/audio/transcriptions through the real
proxy, driven with the official openai client, against a local stand-in for Hugging Face's inference
service (tests/speech_standin.py) that needs the vault's token."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx  # what the openai SDK itself uses
import openai
import pytest

from proxy.lifecycle.service import Lifecycle
from proxy.metering.tokens import count_text
from proxy.speech.catalog import RegistryCatalog
from proxy.speech.resample import PcmResampler
from proxy.storage.budget import format_reset, period_bounds, zone
from proxy.storage.database import Database
from proxy.storage.hf_tokens import TokenStore
from proxy.storage.models import ModelStore
from proxy.storage.vault import Vault
from tests.harness import Daemon, Proxy, free_port, proxy_env
from tests.speech_standin import TRANSCRIPT, StandIn, make_wav

HF_TOKEN = "hf_" + "standintoken" * 3
ENCRYPTION_KEY = secrets.token_hex(32)
MAX_AUDIO = 200_000
SAY = "The quick brown fox jumps over the lazy dog."
WAV_1S = make_wav(1.0)
BUDGET_ZONE = "Pacific/Kiritimati"  # UTC+14


def register_speech_model(
    proxy: Proxy, name: str, kind: str, repo: str, *, token: str | None = None, running: bool = True
) -> None:
    """Register a speech model (and its token, in the vault) through the model registry, as
    ``llmserver vault add`` and ``llmserver models add`` do, in another process's connection."""

    async def register() -> None:
        async with Database.open(proxy.db_path) as db:
            lifecycle = Lifecycle(Path(proxy.env["LLMSERVER_MODEL_CONFIG_DIR"]), None, Vault(ENCRYPTION_KEY))
            await lifecycle.start(db, None)
            registry = lifecycle.registry
            fields: dict[str, object] = {"kind": kind, "source_repo": repo, "backend": "hf-inference"}
            if token is not None:
                fields["hf_token_id"] = (await registry.tokens.add(f"token for {name}", token)).id
            await registry.add(name, **fields)
            await (registry.start(name) if running else registry.stop(name))
            await lifecycle.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, register()).result()


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    s = StandIn(HF_TOKEN).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def speech_proxy(shared_daemon: Daemon, standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("speech-proxy")
    port = free_port()
    env = proxy_env(tmp, shared_daemon.endpoint, port)
    env.update(
        {
            "LLMSERVER_ENCRYPTION_KEY": ENCRYPTION_KEY,
            "LLMSERVER_HF_INFERENCE_URL": standin.url,
            "LLMSERVER_HF_INFERENCE_TIMEOUT": "5",
            "LLMSERVER_MAX_AUDIO_BYTES": str(MAX_AUDIO),
            "LLMSERVER_BUDGET_TIMEZONE": BUDGET_ZONE,  # far from UTC: a day there ends at 10:00 UTC
        }
    )
    p = Proxy(env, tmp / "app.db", port, tmp / "proxy.log").start()
    register_speech_model(p, "tts-demo", "tts", "acme/tts-model", token=HF_TOKEN)
    register_speech_model(p, "stt-demo", "stt", "acme/whisper-tiny", token=HF_TOKEN)
    register_speech_model(p, "stt-wrong-token", "stt", "acme/whisper-tiny", token="hf_wrongwrongwrong")
    register_speech_model(p, "stt-stopped", "stt", "acme/whisper-tiny", token=HF_TOKEN, running=False)
    yield p
    p.stop()


@pytest.fixture
def fresh(standin: StandIn) -> StandIn:
    standin.reset()
    return standin


def rows(proxy: Proxy, key_name: str) -> list[tuple[object, ...]]:
    return proxy.query(
        "SELECT e.endpoint, e.model, e.status, e.prompt_tokens, e.completion_tokens, e.audio_seconds, "
        "e.streamed, e.client_disconnected FROM token_usage_events e JOIN api_keys k ON k.id = e.api_key_id "
        "WHERE k.name = ? ORDER BY e.id",
        (key_name,),
    )


def client(proxy: Proxy, key: str, **kw: object) -> openai.OpenAI:
    kw.setdefault("timeout", 30)
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, **kw)  # type: ignore[arg-type]


def test_speech_streams_the_audio_as_it_arrives(speech_proxy: Proxy, fresh: StandIn) -> None:
    key = speech_proxy.make_key("tts-stream")
    received, finished_at_first = b"", None
    with client(speech_proxy, key) as c:
        with c.audio.speech.with_streaming_response.create(
            model="tts-demo", voice="alloy", input=SAY, response_format="wav"
        ) as response:
            assert response.headers["content-type"] == "audio/wav"
            for chunk in response.iter_bytes():
                if finished_at_first is None:
                    finished_at_first = fresh.finished.is_set()
                    fresh.first_seen.set()
                received += chunk
    assert finished_at_first is False, "the first audio bytes came only after the stand-in had sent them all"
    assert received == fresh.audio
    assert fresh.calls[0]["repo"] == "acme/tts-model" and fresh.calls[0]["inputs"] == SAY
    assert rows(speech_proxy, "tts-stream") == [("/v1/audio/speech", "tts-demo", 200, count_text(SAY), 0, None, 1, 0)]
    (counts,) = speech_proxy.query("SELECT tokens_used, endpoint_counts FROM api_keys WHERE name = 'tts-stream'")
    assert counts[0] == count_text(SAY) and json.loads(str(counts[1])) == {"/v1/audio/speech": 1}


def test_audio_cut_off_upstream_is_not_passed_off_as_whole(speech_proxy: Proxy, fresh: StandIn) -> None:
    fresh.reset("cut")
    key = speech_proxy.make_key("tts-cut")
    received = b""
    with client(speech_proxy, key) as c, pytest.raises((httpx.HTTPError, openai.APIConnectionError)):
        with c.audio.speech.with_streaming_response.create(
            model="tts-demo", voice="alloy", input=SAY, response_format="wav"
        ) as response:
            for chunk in response.iter_bytes():
                fresh.first_seen.set()  # the stand-in sends the rest, then cuts
                received += chunk
    assert 0 < len(received) < len(fresh.audio)
    # It ran (audio was produced and sent), so its prompt is billed, as a text stream cut short is.
    assert rows(speech_proxy, "tts-cut") == [("/v1/audio/speech", "tts-demo", 502, count_text(SAY), 0, None, 1, 0)]


def test_speech_as_pcm_is_the_wav_samples_at_openais_24_khz(speech_proxy: Proxy, fresh: StandIn) -> None:
    fresh.first_seen.set()
    key = speech_proxy.make_key("tts-pcm")
    with client(speech_proxy, key) as c:
        with c.audio.speech.with_streaming_response.create(
            model="tts-demo", voice="nova", input=SAY, response_format="pcm"
        ) as response:
            assert response.headers["content-type"] == "audio/pcm"
            assert response.headers["x-audio-sample-rate"] == "24000"  # the stand-in speaks at 16 kHz
            assert response.headers["x-audio-channels"] == "1"
            pcm = response.read()
    samples = fresh.audio[44:]  # the wave module writes a 44-byte header
    resampler = PcmResampler(16000, 1)
    assert pcm == resampler.feed(samples) + resampler.finish()
    assert abs(len(pcm) / 2 / 24000 - len(samples) / 2 / 16000) < 0.001  # same duration, played at 24 kHz
    assert rows(speech_proxy, "tts-pcm")[0][2:5] == (200, count_text(SAY), 0)


def test_speech_refuses_a_format_it_cannot_make(speech_proxy: Proxy, fresh: StandIn) -> None:
    fresh.first_seen.set()
    key = speech_proxy.make_key("tts-mp3")
    with client(speech_proxy, key) as c, pytest.raises(openai.BadRequestError) as err:
        c.audio.speech.create(model="tts-demo", voice="alloy", input=SAY, response_format="mp3")
    assert err.value.body["param"] == "response_format"  # type: ignore[index]
    assert "it can give wav, pcm" in err.value.message
    assert rows(speech_proxy, "tts-mp3") == [("/v1/audio/speech", "tts-demo", 400, 0, 0, None, 0, 0)]


def test_transcription_counts_the_transcript_and_the_audio_seconds(speech_proxy: Proxy, fresh: StandIn) -> None:
    key = speech_proxy.make_key("stt-json")
    with client(speech_proxy, key) as c:
        result = c.audio.transcriptions.create(model="stt-demo", file=("hello.wav", WAV_1S, "audio/wav"))
    assert result.text == TRANSCRIPT
    assert fresh.received == WAV_1S and fresh.calls[0]["type"] == "audio/wav"
    assert fresh.calls[0]["repo"] == "acme/whisper-tiny"
    assert rows(speech_proxy, "stt-json") == [
        ("/v1/audio/transcriptions", "stt-demo", 200, 0, count_text(TRANSCRIPT), 1.0, 0, 0)
    ]


def test_transcription_response_formats(speech_proxy: Proxy, fresh: StandIn) -> None:
    key = speech_proxy.make_key("stt-formats")
    upload = ("hello.wav", WAV_1S, "audio/wav")
    with client(speech_proxy, key) as c:
        text = c.audio.transcriptions.create(model="stt-demo", file=upload, response_format="text")
        srt = c.audio.transcriptions.create(model="stt-demo", file=upload, response_format="srt")
        vtt = c.audio.transcriptions.create(model="stt-demo", file=upload, response_format="vtt")
        verbose = c.audio.transcriptions.create(
            model="stt-demo", file=upload, response_format="verbose_json", language="en"
        )
    assert str(text).strip() == TRANSCRIPT
    assert str(srt).startswith("1\n00:00:00,000 --> 00:00:00,800\nHello from the stand-in,")
    assert "2\n00:00:00,800 --> 00:00:01,600\n" in str(srt)
    assert str(vtt).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:00.800\n")
    assert verbose.text == TRANSCRIPT and verbose.duration == 1.0 and verbose.language == "en"
    assert [s.end for s in verbose.segments or []] == [0.8, 1.6]
    assert [r[2] for r in rows(speech_proxy, "stt-formats")] == [200, 200, 200, 200]


@pytest.mark.parametrize(
    ("mode", "model", "status", "code"),
    [
        ("loading", "stt-demo", 503, "model_loading"),
        ("bad_request", "stt-demo", 400, "upstream_error"),
        ("timeout", "stt-demo", 504, "upstream_timeout"),
        ("ok", "stt-wrong-token", 502, "upstream_token_refused"),
    ],
)
def test_upstream_failures_are_openai_errors(
    speech_proxy: Proxy, fresh: StandIn, mode: str, model: str, status: int, code: str
) -> None:
    fresh.reset(mode)
    key = speech_proxy.make_key(f"fail-{mode}")
    with client(speech_proxy, key) as c, pytest.raises(openai.APIStatusError) as err:
        c.audio.transcriptions.create(model=model, file=("hello.wav", WAV_1S, "audio/wav"))
    exc = err.value
    assert (exc.status_code, exc.code) == (status, code)
    headers = exc.response.headers
    if mode == "loading":
        assert headers["retry-after"] == "13" and "loading" in exc.message
    if mode == "bad_request":
        assert "Input is too long for this model" in exc.message
    if mode == "timeout":
        assert headers["x-should-retry"] == "false"
    if model == "stt-wrong-token":
        assert "Hugging Face token" in exc.message and "refused" in exc.message
        assert "hf_wrongwrongwrong" not in exc.response.text
    assert rows(speech_proxy, f"fail-{mode}") == [("/v1/audio/transcriptions", model, status, 0, 0, None, 0, 0)]
    assert "hf_wrongwrongwrong" not in Path(speech_proxy.log_path).read_text()


def test_the_speech_endpoint_passes_upstream_failures_too(speech_proxy: Proxy, fresh: StandIn) -> None:
    fresh.reset("loading")
    key = speech_proxy.make_key("tts-loading")
    with client(speech_proxy, key) as c, pytest.raises(openai.InternalServerError) as err:
        c.audio.speech.create(model="tts-demo", voice="alloy", input=SAY)
    assert err.value.status_code == 503 and err.value.response.headers["retry-after"] == "13"
    assert rows(speech_proxy, "tts-loading") == [("/v1/audio/speech", "tts-demo", 503, 0, 0, None, 0, 0)]


def post_raw(proxy: Proxy, key: str, path: str, **kw: object) -> httpx.Response:
    return httpx.post(f"{proxy.base_url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=30, **kw)  # type: ignore[arg-type]


BAD_TRANSCRIPTIONS = [
    ("missing file", {"files": {"model": (None, "stt-demo")}}, 400, "file"),
    ("empty file", {"data": {"model": "stt-demo"}, "files": {"file": ("a.wav", b"", "audio/wav")}}, 400, "file"),
    (
        "over the limit",
        {"data": {"model": "stt-demo"}, "files": {"file": ("big.wav", b"\0" * (MAX_AUDIO + 1), "audio/wav")}},
        413,
        "file",
    ),
    ("wrong type", {"data": {"model": "stt-demo"}, "files": {"file": ("notes.txt", b"hi", "text/plain")}}, 400, "file"),
    ("not multipart", {"json": {"model": "stt-demo"}}, 415, None),
    ("tts model", {"data": {"model": "tts-demo"}, "files": {"file": ("a.wav", WAV_1S, "audio/wav")}}, 400, "model"),
    ("unknown model", {"data": {"model": "nope"}, "files": {"file": ("a.wav", WAV_1S, "audio/wav")}}, 404, "model"),
    (
        "bad format",
        {"data": {"model": "stt-demo", "response_format": "docx"}, "files": {"file": ("a.wav", WAV_1S, "audio/wav")}},
        400,
        "response_format",
    ),
]
BAD_SPEECH = [
    ("stt model", {"model": "stt-demo", "voice": "alloy", "input": SAY}, 400, "model"),
    ("unknown voice", {"model": "tts-demo", "voice": "darth", "input": SAY}, 400, "voice"),
    (
        "unknown format",
        {"model": "tts-demo", "voice": "alloy", "input": SAY, "response_format": "ogg"},
        400,
        "response_format",
    ),
    ("no input", {"model": "tts-demo", "voice": "alloy", "input": ""}, 400, "input"),
]


# What a request could change in a model's row. The reconciler's own columns (actual state, error,
# failures, retry time, updated_at) move on their own: this proxy shares its daemon with other tests,
# whose models come and go (comparing them made this test fail now and then).
STORED_MODELS = (
    "SELECT id, name, kind, backend, source_repo, files, patterns, revision, local_path, params, "
    "desired_state, hf_token_id, keep_alive, sha256, size_bytes FROM models ORDER BY id"
)


def test_bad_input_gets_4xx_envelopes_and_harms_nothing(speech_proxy: Proxy, fresh: StandIn) -> None:
    key = speech_proxy.make_key("bad-input")
    stored = (
        speech_proxy.query(STORED_MODELS),
        speech_proxy.query("SELECT * FROM huggingface_tokens ORDER BY id"),
    )
    for what, kw, status, param in BAD_TRANSCRIPTIONS:
        r = post_raw(speech_proxy, key, "/audio/transcriptions", **kw)
        assert r.status_code == status, (what, r.text)
        assert r.json()["error"]["param"] == param, what
    r = post_raw(
        speech_proxy,
        key,
        "/audio/transcriptions",
        data={"model": "stt-demo"},
        files={"file": ("x.txt", b"x", "text/plain")},
    )
    assert "Supported formats: ['flac', 'm4a', 'mp3'" in r.json()["error"]["message"]
    for what, body, status, param in BAD_SPEECH:
        r = post_raw(speech_proxy, key, "/audio/speech", json=body)
        assert r.status_code == status, (what, r.text)
        assert r.json()["error"]["param"] == param, what
    assert fresh.calls == [], "nothing bad reached the inference service"
    assert speech_proxy.query("SELECT tokens_used, tokens_reserved FROM api_keys WHERE name = 'bad-input'") == [(0, 0)]
    assert (
        speech_proxy.query(STORED_MODELS),
        speech_proxy.query("SELECT * FROM huggingface_tokens ORDER BY id"),
    ) == stored
    # Refusals after admission are recorded, unbilled; a malformed request never got that far.
    assert {r[2] for r in rows(speech_proxy, "bad-input")} <= {400, 404}


def test_allow_list_quota_and_stopped_models_are_checked_before_the_upstream(
    speech_proxy: Proxy, fresh: StandIn
) -> None:
    only_chat = speech_proxy.make_key("only-chat", allowed_models=["smollm2"])
    tiny = speech_proxy.make_key("tiny", token_limit=3)
    with client(speech_proxy, only_chat) as c, pytest.raises(openai.PermissionDeniedError):
        c.audio.speech.create(model="tts-demo", voice="alloy", input=SAY)
    with client(speech_proxy, tiny) as c, pytest.raises(openai.RateLimitError) as err:
        c.audio.speech.create(model="tts-demo", voice="alloy", input=SAY)
    assert err.value.code == "insufficient_quota"
    with client(speech_proxy, tiny) as c, pytest.raises(openai.InternalServerError) as stopped:
        c.audio.transcriptions.create(model="stt-stopped", file=("a.wav", WAV_1S, "audio/wav"))
    assert stopped.value.code == "model_not_running"
    assert fresh.calls == []
    assert [r[2:5] for r in rows(speech_proxy, "only-chat")] == [(403, 0, 0)]
    assert [r[2:5] for r in rows(speech_proxy, "tiny")] == [(429, 0, 0), (503, 0, 0)]
    assert speech_proxy.query("SELECT tokens_used, tokens_reserved FROM api_keys WHERE name = 'tiny'") == [(0, 0)]


def test_a_client_that_goes_away_cancels_the_upstream_call(speech_proxy: Proxy, fresh: StandIn) -> None:
    fresh.reset("slow")
    key = speech_proxy.make_key("gone")
    with client(speech_proxy, key, timeout=1.5) as c, pytest.raises(openai.APITimeoutError):
        c.audio.transcriptions.create(model="stt-demo", file=("a.wav", WAV_1S, "audio/wav"))
    assert fresh.cancelled.wait(5), "the proxy kept the inference call running"
    end = time.monotonic() + 5
    while not rows(speech_proxy, "gone") and time.monotonic() < end:
        time.sleep(0.05)
    assert rows(speech_proxy, "gone") == [("/v1/audio/transcriptions", "stt-demo", 499, 0, 0, None, 0, 1)]


@pytest.mark.asyncio
async def test_the_catalog_reads_the_registry_and_falls_back_to_the_default_token(db: Database, tmp_path: Path) -> None:
    tokens, models = TokenStore(db, Vault(ENCRYPTION_KEY)), ModelStore(db, tmp_path / "config")
    await tokens.add("default", HF_TOKEN, default=True)
    own = await tokens.add("own", "hf_owntokenowntoken")
    await models.create(
        "voice",
        kind="tts",
        source_repo="acme/tts",
        hf_token_id=own.id,
        desired_state="running",
        params={"voices": "af_heart, am_adam"},  # as `llmserver models add --param voices=af_heart,am_adam` stores it
    )
    await models.create("ears", kind="stt", source_repo="acme/stt", params={"voices": ["x"]})
    await models.create("text", local_path="/m.gguf")
    catalog = RegistryCatalog(models, tokens, keyed=True)

    voice, ears = await catalog.resolve("voice"), await catalog.resolve("ears")
    assert voice is not None and voice.token == "hf_owntokenowntoken" and voice.running and voice.repo == "acme/tts"
    assert voice.voices == ("af_heart", "am_adam")
    assert ears is not None and ears.token == HF_TOKEN and not ears.running and ears.voices == ("x",)
    assert HF_TOKEN not in repr(ears)
    assert await catalog.resolve("text") is None and await catalog.resolve("../x") is None
    assert await catalog.resolve("nobody") is None
    # Issue 25: a stored token that cannot be read is a problem the call reports, never an anonymous call.
    unkeyed = await RegistryCatalog(models, TokenStore(db, None), keyed=False).resolve("voice")
    assert unkeyed is not None and unkeyed.token is None and "cannot be decrypted" in str(unkeyed.token_problem)
    wrong = await RegistryCatalog(models, TokenStore(db, Vault("44" * 32)), keyed=True).resolve("voice")
    assert wrong is not None and wrong.token is None and "not the one it was stored with" in str(wrong.token_problem)


def test_speech_budgets_turn_in_the_configured_time_zone(speech_proxy: Proxy, fresh: StandIn) -> None:
    key = speech_proxy.make_key("tiny-daily-speech", token_limit=3, budget_period="daily")
    before = time.time()
    with client(speech_proxy, key) as c, pytest.raises(openai.RateLimitError) as err:
        c.audio.speech.create(model="tts-demo", voice="alloy", input=SAY)
    after = time.time()
    ends = {format_reset(period_bounds("daily", t, zone(BUDGET_ZONE))[1]) for t in (before, after)}
    assert err.value.response.headers["x-budget-resets-at"] in ends
    assert err.value.response.headers["x-budget-resets-at"] != format_reset(period_bounds("daily", after)[1])
    assert fresh.calls == []
