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

from proxy.metering.tokens import count_text
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
    with filler.open("wb", buffering=0) as fh:  # take every byte left (unbuffered: close has nothing to write)
        try:
            while True:
                fh.write(b"\0" * 65536)
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


def owed_gauge(proxy: Proxy) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("llmserver_ledger_owed_rows "):
                return float(line.split()[1])
    raise AssertionError("no llmserver_ledger_owed_rows gauge")


def test_a_stream_running_when_the_disk_fills_is_billed_once_space_returns(
    shared_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Issue 18: a stream already running when the ledger's disk filled delivered its tokens, then a
    503 event, and its row was dropped (reservation released, tokens never billed). Now the row is
    owed, its reservation held, and written once the disk takes it."""
    tmp = tmp_path_factory.mktemp("ledger-owed")
    port = free_port()
    fillers: list[Path] = []

    def fill_once(result: object) -> None:  # after the first text chunk: admission is long past
        if not fillers:
            fillers.append(fill(mount))

    with tmpfs(tmp / "db", size="4m") as mount:
        proxy = Proxy(proxy_env(tmp, shared_daemon.endpoint, port), mount / "app.db", port, tmp / "proxy.log")
        proxy.env["LLMSERVER_DATABASE_URL"] = f"sqlite:///{mount}/app.db"
        proxy.start()
        try:
            key = proxy.make_key("quota", token_limit=100_000)
            ((key_id,),) = proxy.query("SELECT id FROM api_keys WHERE name = 'quota'")
            # No request before this one: its row is then the largest write the WAL has seen, so it
            # needs space the full disk no longer has (a WAL starting over reuses its old frames).
            result = stream_chat(proxy.base_url, key, max_tokens=48, after_chunk=fill_once)
            assert fillers and result.status == 200 and result.text, result
            assert result.error is not None and result.error["code"] == "service_unavailable", result
            request_id = result.request_id
            assert request_id is not None
            assert proxy.query("SELECT 1 FROM token_usage_events WHERE request_id = ?", (request_id,)) == []
            held = proxy.query("SELECT tokens FROM quota_reservations WHERE api_key_id = ?", (key_id,))
            assert len(held) == 1, held  # the quota stays taken while the row is owed
            assert owed_gauge(proxy) == 1
            fillers[0].unlink()
            remount(mount, "8m")
            deadline = time.monotonic() + 20
            while not (rows := proxy.query(_ROW, (request_id,))):
                assert time.monotonic() < deadline, "the owed row was never written"
                time.sleep(0.2)
            ((prompt, completion, status),) = rows
            assert prompt > 0 and completion == count_text(result.text) and status == 200, rows  # every token delivered
            ((used, count, billed, events),) = proxy.query(_KEY, (key_id, key_id, key_id))
            assert used == billed and count == events == 1, (used, billed, count, events)
            assert proxy.query("SELECT 1 FROM quota_reservations WHERE api_key_id = ?", (key_id,)) == []
            assert owed_gauge(proxy) == 0
        finally:
            proxy.stop()
    log = proxy.log_path.read_text()
    assert "Traceback" not in log and "every owed usage row is written" in log, log[-3000:]
    print(
        f"FAULT ledger disk full mid-stream: row {request_id} written once space returned, {completion} tokens billed"
    )


_ROW = "SELECT prompt_tokens, completion_tokens, status FROM token_usage_events WHERE request_id = ?"
_KEY = (
    "SELECT tokens_used, request_count, (SELECT SUM(prompt_tokens + completion_tokens) FROM token_usage_events "
    "WHERE api_key_id = ?), (SELECT COUNT(*) FROM token_usage_events WHERE api_key_id = ?) FROM api_keys "
    "WHERE id = ?"
)
