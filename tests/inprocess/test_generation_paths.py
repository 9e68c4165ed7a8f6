"""Paths of a generation no real-daemon test reaches, each with its one usage row (issue 8).

The runtime dying or timing out mid-request, a failing ledger write, the database gone, a request
cancelled at shutdown, a bug in the chunk writer: whatever ends a request, it leaves exactly one
row and no quota reservation behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from proxy.appkeys import lifecycle_key
from proxy.openai.sse import ChunkWriter
from runtime.api.errors import RuntimeRequestError, RuntimeUnavailableError
from tests.fake_runtime import Script
from tests.inprocess.conftest import InProcess

CHAT = "/v1/chat/completions"


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": stream, **extra}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sse_events(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def one_row(app: InProcess, key_id: int) -> tuple[Any, ...]:
    rows = app.rows(
        "SELECT status, prompt_tokens, completion_tokens, client_disconnected FROM token_usage_events "
        "WHERE api_key_id = ?",
        key_id,
    )
    assert len(rows) == 1, rows
    return rows[0]


def no_reservation(app: InProcess, key_id: int) -> None:
    assert app.rows("SELECT tokens_reserved FROM api_keys WHERE id = ?", key_id) == [(0,)]
    assert app.rows("SELECT count(*) FROM quota_reservations") == [(0,)]


@pytest.mark.asyncio
async def test_runtime_gone_mid_request_is_502_buffered_and_an_error_event_streamed(app: InProcess) -> None:
    gone = RuntimeUnavailableError("the daemon went away")
    app.runtime.scripts["fake"] = Script(fail_after=2, failure=gone)
    key, key_id = await app.key(token_limit=10_000)
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == 502
    assert (await r.json())["error"]["code"] == "runtime_error"
    status, prompt, completion, _ = one_row(app, key_id)
    assert (status, prompt, completion) == (502, 0, 0)  # a buffered answer that failed delivered nothing (issue 25)
    no_reservation(app, key_id)

    key, key_id = await app.key(token_limit=10_000)
    r = await app.http.post(CHAT, json=chat(stream=True), headers=auth(key))
    assert r.status == 200  # headers went out when the runtime queued it
    events = sse_events(await r.text())
    assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "runtime_error"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2] if e["choices"]) == "Hello,"
    assert one_row(app, key_id)[0] == 502
    no_reservation(app, key_id)


@pytest.mark.asyncio
async def test_runtime_down_before_the_request_is_503_and_unbilled(app: InProcess) -> None:
    app.runtime.down = True
    key, key_id = await app.key(token_limit=10_000)
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == 503 and r.headers["retry-after"]
    status, prompt, completion, _ = one_row(app, key_id)
    assert (status, prompt, completion) == (503, 0, 0)
    no_reservation(app, key_id)


@pytest.mark.asyncio
async def test_deadline_mid_request_is_504_that_sdks_do_not_retry(app: InProcess) -> None:
    late = RuntimeRequestError("deadline_exceeded", "deadline passed")
    app.runtime.scripts["fake"] = Script(fail_after=1, failure=late)
    key, key_id = await app.key()
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == 504 and r.headers["x-should-retry"] == "false"
    assert (await r.json())["error"]["code"] == "timeout"
    assert one_row(app, key_id)[0] == 504


@pytest.mark.parametrize(
    ("code", "status", "openai_code"),
    [
        ("context_length_exceeded", 400, "context_length_exceeded"),
        ("bad_request", 400, "invalid_request"),  # e.g. a NUL in the prompt: not a context-length error
        ("busy", 503, "model_busy"),
    ],
)
@pytest.mark.asyncio
async def test_each_runtime_refusal_maps_to_its_own_error_and_costs_nothing(
    app: InProcess, code: str, status: int, openai_code: str
) -> None:
    app.runtime.scripts["fake"] = Script(refuse=RuntimeRequestError(code, f"refused: {code}"))
    key, key_id = await app.key(token_limit=10_000)
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == status
    assert (await r.json())["error"]["code"] == openai_code
    assert one_row(app, key_id)[:3] == (status, 0, 0)
    no_reservation(app, key_id)


@pytest.mark.asyncio
async def test_a_model_the_runtime_does_not_hold_is_coming_while_wanted_and_unknown_once_stopped(
    app: InProcess,
) -> None:
    """issue 20: the reconciler runs in-process too (the fake answers hello/load/unload). The runtime's
    ``unknown_model`` for a model the registry wants running is a 503 with retry-after (it is on its
    way back); once an admin stopped it, a 404. Neither costs anything."""
    app.runtime.scripts["fake"] = Script(refuse=RuntimeRequestError("unknown_model", "refused: unknown_model"))
    key, key_id = await app.key(token_limit=10_000)
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == 503 and r.headers["retry-after"], await r.text()
    await app.server.app[lifecycle_key].registry.stop("fake")
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == 404 and (await r.json())["error"]["code"] == "model_not_found"
    rows = app.rows(
        "SELECT status, prompt_tokens, completion_tokens FROM token_usage_events WHERE api_key_id = ?", key_id
    )
    assert sorted(rows) == [(404, 0, 0), (503, 0, 0)]
    no_reservation(app, key_id)


@pytest.mark.asyncio
async def test_a_prompt_too_long_found_when_the_model_takes_it_up_costs_nothing(app: InProcess) -> None:
    too_long = RuntimeRequestError("context_length_exceeded", "the prompt is 9000 tokens; the context is 2048")
    app.runtime.scripts["fake"] = Script(fail_after=0, failure=too_long)
    key, key_id = await app.key(token_limit=10_000)
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == 400 and (await r.json())["error"]["code"] == "context_length_exceeded"
    assert one_row(app, key_id)[:3] == (400, 0, 0)
    r = await app.http.post(CHAT, json=chat(stream=True), headers=auth(key))
    events = sse_events(await r.text())
    assert events[-2]["error"]["code"] == "context_length_exceeded" and events[-1] == "[DONE]"
    assert app.rows("SELECT sum(prompt_tokens + completion_tokens) FROM token_usage_events") == [(0,)]
    no_reservation(app, key_id)


@pytest.mark.asyncio
async def test_a_failing_ledger_write_is_500_counted_logged_and_leaks_no_reservation(
    app: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    key, key_id = await app.key(token_limit=10_000)
    # Break the ledger for real: another connection drops its table (the writer's insert then fails).
    app.rows("ALTER TABLE token_usage_events RENAME TO moved_away")
    with caplog.at_level(logging.ERROR, logger="proxy.metering.settle"):
        r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == 500
    assert (await r.json())["error"]["message"] == "the usage ledger could not be written"
    assert app.ledger_failures() == 1
    assert any("could not be written" in rec.getMessage() for rec in caplog.records)
    no_reservation(app, key_id)

    r = await app.http.post(CHAT, json=chat(stream=True), headers=auth(key))
    events = sse_events(await r.text())  # streamed: the failure is the stream's last event, not a silent end
    assert events[-2]["error"]["code"] == "ledger_error" and events[-1] == "[DONE]"
    assert app.ledger_failures() == 2
    no_reservation(app, key_id)


@pytest.mark.asyncio
async def test_readyz_says_so_when_the_database_is_gone(app: InProcess) -> None:
    r = await app.http.get("/readyz")
    assert r.status == 200, await r.text()
    await app.db.close()
    r = await app.http.get("/readyz")
    assert r.status == 503
    body = await r.json()
    assert body["checks"]["database"] == "unavailable" and body["checks"]["runtime"] == "ok"


@pytest.mark.asyncio
async def test_a_stream_cancelled_at_shutdown_still_leaves_its_row(app: InProcess) -> None:
    app.runtime.scripts["fake"] = Script(pieces=[" one", " two", " three"], hang=True)
    key, key_id = await app.key(token_limit=10_000)
    response = await app.http.post(CHAT, json=chat(stream=True, max_tokens=100), headers=auth(key))
    assert response.status == 200
    got = b""
    while got.count(b"data: ") < 4:  # the role chunk and three pieces: the generation now hangs
        got += await response.content.readany()
    await app.server.close()  # shutdown: the handler is cancelled after the shutdown timeout
    status, prompt, completion, disconnected = one_row(app, key_id)
    assert (status, completion, disconnected) == (499, 3, 0) and prompt > 0
    no_reservation(app, key_id)
    assert app.requests()[-1].aborted


@pytest.mark.asyncio
async def test_a_chunk_writer_that_raises_still_leaves_the_row(app: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    original = ChunkWriter.text

    def broken(self: ChunkWriter, piece: str) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a bug in the chunk writer")
        return original(self, piece)

    monkeypatch.setattr(ChunkWriter, "text", broken)
    key, key_id = await app.key(token_limit=10_000)
    r = await app.http.post(CHAT, json=chat(stream=True), headers=auth(key))
    events = sse_events(await r.text())
    assert events[-2]["error"]["type"] == "server_error" and events[-1] == "[DONE]"
    status, _, completion, _ = one_row(app, key_id)
    assert status == 500 and completion == 2  # two pieces had been taken from the model
    no_reservation(app, key_id)
    assert app.requests()[-1].aborted


@pytest.mark.asyncio
async def test_a_client_gone_before_the_first_text_is_unbilled_and_aborted(app: InProcess) -> None:
    app.runtime.scripts["fake"] = Script(pieces=["late"], delay=30)
    key, key_id = await app.key(token_limit=10_000)
    body = json.dumps(chat()).encode()
    _reader, writer = await asyncio.open_connection(app.server.host, app.server.port)
    writer.write(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    while not app.requests():
        await asyncio.sleep(0.01)
    writer.close()  # the client closes its connection while its request waits for the first text
    await writer.wait_closed()
    for _ in range(200):
        if app.rows("SELECT count(*) FROM token_usage_events") == [(1,)]:
            break
        await asyncio.sleep(0.02)
    assert one_row(app, key_id) == (499, 0, 0, 1)
    assert app.requests()[-1].aborted
    no_reservation(app, key_id)
