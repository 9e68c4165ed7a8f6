"""Regression tests for billing holes found by a hostile probe (issue 14), each failing on the old code."""

from __future__ import annotations

import threading

import pytest

from proxy.metering import tokens
from proxy.metering.request import GenerationRequest
from tests.fake_runtime import Script
from tests.inprocess.conftest import InProcess
from tests.inprocess.test_generation_paths import CHAT, auth, chat, no_reservation


@pytest.mark.asyncio
async def test_a_reused_request_id_is_billed_every_time_on_one_key_and_on_two(app: InProcess) -> None:
    """The client's X-Request-ID used to be the ledger's identity: repeats went unbilled or got a 500."""
    first, first_id = await app.key(token_limit=100_000)
    second, second_id = await app.key(token_limit=100_000)
    answers = []
    for key in (first, first, first, second, second):
        r = await app.http.post(CHAT, json=chat(), headers={**auth(key), "X-Request-ID": "dup-1"})
        assert r.status == 200
        assert r.headers["x-client-request-id"] == "dup-1"
        answers.append((r.headers["x-request-id"], (await r.json())["usage"]["total_tokens"]))
    assert len({server_id for server_id, _ in answers}) == 5  # the server's own ids, all distinct
    rows = app.rows("SELECT request_id, client_request_id, api_key_id FROM token_usage_events ORDER BY id")
    assert [r[0] for r in rows] == [server_id for server_id, _ in answers]
    assert {r[1] for r in rows} == {"dup-1"}
    per_key = dict(app.rows("SELECT id, tokens_used FROM api_keys"))
    assert per_key[first_id] == sum(total for _, total in answers[:3])
    assert per_key[second_id] == sum(total for _, total in answers[3:])


@pytest.mark.asyncio
async def test_a_streamed_reuse_of_a_request_id_is_billed_too(app: InProcess) -> None:
    key, key_id = await app.key(token_limit=100_000)
    for _ in range(3):
        r = await app.http.post(CHAT, json=chat(stream=True), headers={**auth(key), "X-Request-ID": "dup-2"})
        assert r.status == 200
        await r.read()
    assert app.rows("SELECT count(*), sum(prompt_tokens + completion_tokens) > 0 FROM token_usage_events") == [(3, 1)]
    used = app.rows("SELECT tokens_used FROM api_keys WHERE id = ?", key_id)[0][0]
    assert used == app.rows("SELECT sum(prompt_tokens + completion_tokens) FROM token_usage_events")[0][0]


@pytest.mark.asyncio
async def test_a_key_with_little_quota_left_is_usable_to_its_end(app: InProcess) -> None:
    """Admission used to reserve prompt + the default 512 and refuse a key with 400 tokens left."""
    app.runtime.scripts["fake"] = Script(pieces=[" word"] * 1000)
    key, key_id = await app.key(token_limit=400)
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))  # no max_tokens: the default 512
    assert r.status == 200
    body = await r.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["total_tokens"] <= 400
    assert app.requests()[-1].params.max_tokens == 400 - body["usage"]["prompt_tokens"]
    used = app.rows("SELECT tokens_used FROM api_keys WHERE id = ?", key_id)[0][0]
    assert used == body["usage"]["total_tokens"]
    no_reservation(app, key_id)
    # Spend what is left, then the next request is refused only because not even its prompt fits.
    while used < 400 - body["usage"]["prompt_tokens"]:
        r = await app.http.post(CHAT, json=chat(), headers=auth(key))
        assert r.status == 200
        used = app.rows("SELECT tokens_used FROM api_keys WHERE id = ?", key_id)[0][0]
    r = await app.http.post(CHAT, json=chat(), headers=auth(key))
    assert r.status == 429 and (await r.json())["error"]["code"] == "insufficient_quota"
    assert used <= 400


@pytest.mark.asyncio
async def test_counting_a_large_prompt_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten 1 MB prompts used to be counted on the loop and stall /healthz for seconds."""
    seen: list[str] = []
    original = tokens._count_request

    def spy(req: GenerationRequest) -> int:
        seen.append(threading.current_thread().name)
        return original(req)

    monkeypatch.setattr(tokens, "_count_request", spy)
    small = GenerationRequest("m", None, "hello", 5, 1, 1, 0, 0, 40, 0.05, 1, (), None, False, False)
    large = GenerationRequest("m", None, "word " * 200_000, 5, 1, 1, 0, 0, 40, 0.05, 1, (), None, False, False)
    assert await tokens.count_request(small) == 1
    assert await tokens.count_request(large) == tokens.count_text("word " * 200_000)
    assert seen[0] == threading.main_thread().name
    assert seen[1].startswith("count")
