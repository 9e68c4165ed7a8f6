"""Issue 20: one owner for every metered request (``proxy.metering.meter``).

Each metered endpoint (text, embeddings, the tokenizer's, speech, transcription) through the real
proxy in front of the real daemon (speech: the stand-in for Hugging Face's inference service), on a
key with a quota, so that admission holds a reservation: a request its client cancels, or that fails
after admission, leaves exactly one usage row, no reservation, and exactly one access line that says
what the row says. Old code: speech and transcription had an owner of their own, which wrote no
access line; the middleware's line for them named no model and no tokens, and for a speech stream
cut after its headers it said 200 where the row said 502.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import pytest

from proxy.metering.tokens import count_text
from tests.harness import Proxy
from tests.speech_standin import StandIn
from tests.test_speech import SAY, WAV_1S, speech_proxy, standin  # noqa: F401

QUOTA = 100_000


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _leave_a_chat_stream(proxy: Proxy, key: str, upstream: StandIn) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Count to 300."}], "max_tokens": 300}
    with httpx.Client(timeout=30) as http:
        with http.stream(
            "POST", f"{proxy.base_url}/chat/completions", json={**body, "stream": True}, headers=_auth(key)
        ) as r:
            assert r.status_code == 200
            events = 0
            for line in r.iter_lines():
                events += line.startswith("data: ")
                if events >= 4:
                    break  # leaving the block closes the connection mid-stream


def _embed_with_a_text_model(proxy: Proxy, key: str, upstream: StandIn) -> None:
    r = httpx.post(f"{proxy.base_url}/embeddings", json={"model": "smollm2", "input": SAY}, headers=_auth(key))
    assert r.status_code == 400, r.text  # the runtime's refusal: smollm2 is not loaded for embeddings


def _detokenize_ids_out_of_the_vocabulary(proxy: Proxy, key: str, upstream: StandIn) -> None:
    url = f"http://127.0.0.1:{proxy.port}/extras/detokenize"
    r = httpx.post(url, json={"model": "smollm2", "tokens": [1, 2, 10**9]}, headers=_auth(key))
    assert r.status_code == 400, r.text


def _leave_a_speech_stream(proxy: Proxy, key: str, upstream: StandIn) -> None:
    upstream.reset()
    body = {"model": "tts-demo", "voice": "alloy", "input": SAY, "response_format": "wav"}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{proxy.base_url}/audio/speech", json=body, headers=_auth(key)) as r:
            assert r.status_code == 200
            next(r.iter_raw())
    upstream.first_seen.set()  # the stand-in sends the rest now, into a closed connection


def _speech_cut_upstream(proxy: Proxy, key: str, upstream: StandIn) -> None:
    upstream.reset("cut")
    body = {"model": "tts-demo", "voice": "alloy", "input": SAY, "response_format": "wav"}
    with httpx.Client(timeout=30) as http, pytest.raises(httpx.HTTPError):
        with http.stream("POST", f"{proxy.base_url}/audio/speech", json=body, headers=_auth(key)) as r:
            for _ in r.iter_raw():
                upstream.first_seen.set()


def _transcribe_refused_upstream(proxy: Proxy, key: str, upstream: StandIn) -> None:
    upstream.reset("bad_request")
    files = {"file": ("a.wav", WAV_1S, "audio/wav")}
    r = httpx.post(
        f"{proxy.base_url}/audio/transcriptions", data={"model": "stt-demo"}, files=files, headers=_auth(key)
    )
    assert r.status_code == 400, r.text


def _leave_a_transcription(proxy: Proxy, key: str, upstream: StandIn) -> None:
    upstream.reset("slow")
    files = {"file": ("a.wav", WAV_1S, "audio/wav")}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            f"{proxy.base_url}/audio/transcriptions",
            data={"model": "stt-demo"},
            files=files,
            headers=_auth(key),
            timeout=1.5,
        )
    assert upstream.cancelled.wait(5), "the proxy kept the inference call running"


Action = Callable[[Proxy, str, StandIn], None]
# endpoint, how the request ends, the row's (endpoint, model, status, disconnected, billed prompt or None: any > 0)
CASES: list[tuple[str, Action, tuple[str, str, int, int, int | None]]] = [
    ("text", _leave_a_chat_stream, ("/v1/chat/completions", "smollm2", 499, 1, None)),
    ("embeddings", _embed_with_a_text_model, ("/v1/embeddings", "smollm2", 400, 0, 0)),
    ("tokenize", _detokenize_ids_out_of_the_vocabulary, ("/extras/detokenize", "smollm2", 400, 0, 0)),
    ("speech-left", _leave_a_speech_stream, ("/v1/audio/speech", "tts-demo", 499, 1, count_text(SAY))),
    ("speech-cut", _speech_cut_upstream, ("/v1/audio/speech", "tts-demo", 502, 0, count_text(SAY))),
    ("transcription-refused", _transcribe_refused_upstream, ("/v1/audio/transcriptions", "stt-demo", 400, 0, 0)),
    ("transcription-left", _leave_a_transcription, ("/v1/audio/transcriptions", "stt-demo", 499, 1, 0)),
]


@pytest.mark.parametrize(("name", "action", "expected"), CASES, ids=[c[0] for c in CASES])
def test_a_cancelled_or_failing_request_leaves_one_row_no_reservation_and_one_matching_access_line(
    speech_proxy: Proxy,  # noqa: F811
    standin: StandIn,  # noqa: F811
    name: str,
    action: Action,
    expected: tuple[str, str, int, int, int | None],
) -> None:
    owned = speech_proxy
    key = owned.make_key(f"owner-{name}", token_limit=QUOTA)
    action(owned, key, standin)
    [(key_id,)] = owned.query("SELECT id FROM api_keys WHERE name = ?", (f"owner-{name}",))
    rows = _rows(owned, int(str(key_id)))
    assert len(rows) == 1, rows
    request_id, endpoint, model, status, disconnected, prompt, completion = rows[0]
    want_endpoint, want_model, want_status, want_disconnected, want_prompt = expected
    assert (endpoint, model, status, disconnected) == (want_endpoint, want_model, want_status, want_disconnected)
    assert prompt == want_prompt if want_prompt is not None else prompt > 0
    assert owned.query("SELECT tokens_reserved, tokens_used FROM api_keys WHERE id = ?", (key_id,)) == [
        (0, prompt + completion)
    ]
    assert owned.query("SELECT count(*) FROM quota_reservations WHERE api_key_id = ?", (key_id,)) == [(0,)]
    [line] = _access_lines(owned, str(request_id))
    said = (line["path"], line.get("model"), line["status"], line["key_id"])
    assert said == (endpoint, model, status, key_id), line
    assert (line.get("prompt_tokens"), line.get("completion_tokens")) == (prompt, completion), line


def _rows(proxy: Proxy, key_id: int, wait: float = 10.0) -> list[tuple[Any, ...]]:
    """The key's usage rows, once there is one (a cancelled request's row follows its client's exit)."""
    sql = (
        "SELECT request_id, endpoint, model, status, client_disconnected, prompt_tokens, completion_tokens "
        "FROM token_usage_events WHERE api_key_id = ? ORDER BY id"
    )
    end = time.monotonic() + wait
    while not proxy.query(sql, (key_id,)) and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.2)  # a second row, had there been one, would be there by now
    return proxy.query(sql, (key_id,))


def _access_lines(proxy: Proxy, request_id: str, wait: float = 5.0) -> list[dict[str, Any]]:
    """The proxy's access lines for ``request_id``, once there is one (they are written in batches,
    within 0.1 s), read again a moment later so that a second line would be among them."""
    end = time.monotonic() + wait
    while not _lines_of(proxy, request_id) and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.3)
    return _lines_of(proxy, request_id)


def _lines_of(proxy: Proxy, request_id: str) -> list[dict[str, Any]]:
    """Access lines (``POST /path 200 request=... key_id=1 model=m prompt_tokens=3 ...``) as fields."""
    lines = []
    for text in proxy.log_path.read_text(errors="replace").splitlines():
        _, logger, message = text.partition(" proxy.accesslog: ")
        words = message.split()
        if not logger or f"request={request_id}" not in words:
            continue
        fields: dict[str, Any] = dict(w.split("=", 1) for w in words[3:] if "=" in w)
        fields.update(path=words[1], status=int(words[2]))
        for name in ("key_id", "prompt_tokens", "completion_tokens"):
            if name in fields:
                fields[name] = int(fields[name])
        lines.append(fields)
    return lines
