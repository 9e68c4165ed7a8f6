"""Issue 18: a full disk. While the ledger cannot be written, ``/readyz`` says so and no request runs
(a 503 before any text, never a stream cut after 41 tokens with no row); an audio upload that fills
the spool's disk is a clean 507 envelope, not a 500 with a traceback. Real proxy, real daemon, tmpfs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.faults.clients import stream_chat
from tests.faults.fs import remount, tmpfs
from tests.harness import Daemon, Proxy, free_port, proxy_env
from tests.speech_standin import StandIn, make_wav
from tests.test_speech import ENCRYPTION_KEY, HF_TOKEN, register_speech_model


def readyz(proxy: Proxy) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())["checks"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["checks"]


def fill(mount: Path) -> Path:
    filler = mount / "filler"
    with filler.open("wb") as fh:  # take every byte left
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_ledger_disk_is_not_ready_and_runs_no_request(
    shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Old code: a stream delivered 41 tokens, then a 503 event and no row; /readyz still said ready."""
    tmp = tmp_path_factory.mktemp("ledger-full")
    port = free_port()
    with tmpfs(tmp / "db", size="4m") as mount:
        proxy = Proxy(proxy_env(tmp, shared_daemon.endpoint, port), mount / "app.db", port, tmp / "proxy.log")
        proxy.env["LLMSERVER_DATABASE_URL"] = f"sqlite:///{mount}/app.db"
        proxy.start()
        try:
            key = proxy.make_key("unlimited")
            assert stream_chat(proxy.base_url, key, max_tokens=4).done
            assert readyz(proxy) == (200, {"database": "ok", "runtime": "ok", "warmup": "ok", "ledger": "ok"})
            filler = fill(mount)
            status, checks = readyz(proxy)
            assert status == 503 and checks["ledger"] == "disk full", checks
            for _ in range(3):
                result = stream_chat(proxy.base_url, key, max_tokens=16)
                assert result.status == 503 and result.text == "", result  # refused before anything ran
                assert result.error is not None and result.error["code"] == "service_unavailable"
                assert result.headers.get("retry-after")
            filler.unlink()
            remount(mount, "8m")
            deadline = time.monotonic() + 10
            while readyz(proxy)[0] != 200:
                assert time.monotonic() < deadline, readyz(proxy)
                time.sleep(0.2)
            after = stream_chat(proxy.base_url, key, max_tokens=4)
            assert after.done and after.error is None, after
        finally:
            proxy.stop()
    rows = proxy.query("SELECT status FROM token_usage_events") if (mount / "app.db").exists() else None
    assert rows is None or all(status in (200, 503) for (status,) in rows)
    print("FAULT ledger disk full: /readyz 503 'disk full', requests refused before running, back once space returned")


def test_an_upload_that_fills_the_spool_disk_is_a_507(
    shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Old code: a transcription upload that filled the disk answered 500 with a traceback."""
    tmp = tmp_path_factory.mktemp("spool-full")
    standin = StandIn(HF_TOKEN).start()
    port = free_port()
    try:
        with tmpfs(tmp / "spool", size="1m") as spool:
            env = proxy_env(tmp, shared_daemon.endpoint, port)
            env.update(
                {
                    "TMPDIR": str(spool),
                    "TIKTOKEN_CACHE_DIR": str(tmp / "tiktoken"),  # tiktoken would cache its 1.6 MB file in TMPDIR
                    "LLMSERVER_ENCRYPTION_KEY": ENCRYPTION_KEY,
                    "LLMSERVER_HF_INFERENCE_URL": standin.url,
                    "LLMSERVER_MAX_AUDIO_BYTES": str(8 * 1024 * 1024),
                }
            )
            proxy = Proxy(env, tmp / "app.db", port, tmp / "proxy.log").start()
            try:
                register_speech_model(proxy, "stt-demo", "stt", "acme/whisper-tiny", token=HF_TOKEN)
                key = proxy.make_key("uploader")
                big = make_wav(80.0)  # 2.5 MB: more than the spool's disk holds
                answer = httpx.post(
                    f"{proxy.base_url}/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    data={"model": "stt-demo"},
                    files={"file": ("long.wav", big, "audio/wav")},
                    timeout=60,
                )
                assert answer.status_code == 507, answer.text
                assert answer.json()["error"]["code"] == "insufficient_storage"
                assert not list(spool.glob("llmserver-audio-*"))  # the partial file is gone
                small = httpx.post(
                    f"{proxy.base_url}/audio/transcriptions",
                    headers={"Authorization": f"Bearer {key}"},
                    data={"model": "stt-demo"},
                    files={"file": ("short.wav", make_wav(1.0), "audio/wav")},
                    timeout=60,
                )
                assert small.status_code == 200, small.text
            finally:
                proxy.stop()
    finally:
        standin.stop()
    log = proxy.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
