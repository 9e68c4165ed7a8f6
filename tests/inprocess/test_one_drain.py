"""Issue 20: one shutdown drain for every front. A text stream and a transcription, both waiting on
their upstream when the server shuts down, are cancelled; the metering owner waits for both rows
before the database closes (speech had a drain of its own, which polled), and neither keeps its
quota reservation. The app runs in-process on a real SQLite file, against the scripted runtime and
the stand-in for Hugging Face's inference service."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.lifecycle.service import Lifecycle
from proxy.settings import Settings
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.vault import Vault
from tests.fake_runtime import FakeRuntime, Script
from tests.inprocess.conftest import ProductionLikeServer
from tests.inprocess.test_generation_paths import CHAT, auth, chat
from tests.speech_standin import StandIn, make_wav

HF_TOKEN = "hf_" + "draintoken" * 3
ENCRYPTION_KEY = secrets.token_hex(32)


@pytest_asyncio.fixture
async def standin() -> AsyncIterator[StandIn]:
    s = StandIn(HF_TOKEN).start()
    yield s
    await asyncio.to_thread(s.stop)


async def _register_stt(db: Database, config: Path) -> None:
    lifecycle = Lifecycle(config, None, Vault(ENCRYPTION_KEY))
    await lifecycle.start(db, None)
    token = await lifecycle.registry.tokens.add("drain token", HF_TOKEN)
    await lifecycle.registry.add(
        "stt-demo", kind="stt", source_repo="acme/whisper-tiny", backend="hf-inference", hf_token_id=token.id
    )
    await lifecycle.registry.start("stt-demo")
    await lifecycle.close()


@pytest.mark.asyncio
async def test_text_and_speech_cancelled_at_shutdown_both_leave_their_row_and_no_reservation(
    db: Database, repo: KeyRepository, tmp_path: Path, standin: StandIn
) -> None:
    standin.reset("slow")  # a recognition answers after 4 s: still waiting when the server stops
    config = tmp_path / "config"
    await _register_stt(db, config)
    settings = Settings(
        database_path=tmp_path / "app.db",
        argon2_profile="test",
        encryption_key=bytes.fromhex(ENCRYPTION_KEY),
        hf_inference_url=standin.url,
        model_config_dir=config,
    )
    runtime = FakeRuntime()
    runtime.scripts["fake"] = Script(pieces=[" one"], hang=True)
    server = ProductionLikeServer(create_app(settings, runtime=runtime, db=db))
    text_key, text_id = await _key(repo, "drain-text")
    stt_key, stt_id = await _key(repo, "drain-stt")
    async with TestClient(server) as http:
        stream = await http.post(CHAT, json=chat(stream=True, max_tokens=100), headers=auth(text_key))
        got = b""
        while got.count(b"data: ") < 2:  # the role chunk and the one piece: the generation now hangs
            got += await stream.content.readany()
        form = aiohttp.FormData({"model": "stt-demo"})
        form.add_field("file", make_wav(1.0), filename="a.wav", content_type="audio/wav")
        transcription = asyncio.create_task(http.post("/v1/audio/transcriptions", data=form, headers=auth(stt_key)))
        while not standin.received:  # the audio reached the inference service
            await asyncio.sleep(0.02)
        await server.close()  # shutdown: both handlers are cancelled after the shutdown timeout
        transcription.cancel()
    assert _rows(db, text_id) == [("/v1/chat/completions", 499, 1)]
    assert _rows(db, stt_id) == [("/v1/audio/transcriptions", 499, 0)]
    for key_id in (text_id, stt_id):
        assert _query(db, "SELECT tokens_reserved FROM api_keys WHERE id = ?", key_id) == [(0,)]
    assert _query(db, "SELECT count(*) FROM quota_reservations") == [(0,)]


async def _key(repo: KeyRepository, name: str) -> tuple[str, int]:
    full, row = await repo.create_key(name, token_limit=10_000)
    return full, row.id


def _rows(db: Database, key_id: int) -> list[tuple[object, ...]]:
    """(endpoint, status, billed: a prompt was charged) of each of the key's rows."""
    sql = "SELECT endpoint, status, prompt_tokens > 0 FROM token_usage_events WHERE api_key_id = ? ORDER BY id"
    return _query(db, sql, key_id)


def _query(db: Database, sql: str, *args: object) -> list[tuple[object, ...]]:
    import sqlite3

    conn = sqlite3.connect(db.path, timeout=10)
    try:
        return list(conn.execute(sql, args))
    finally:
        conn.close()
