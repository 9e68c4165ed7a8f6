"""Issue 12: ``/v1/embeddings`` and the ``/extras`` token utilities against the real stack.

One daemon serves the demo model twice: ``smollm2`` for text and ``smollm2-embed`` loaded with
``embedding=true`` (mean-pooled, normalised vectors).
"""

from __future__ import annotations

import base64
import math
import os
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai import OpenAI

from tests.harness import Daemon, Proxy, clean_env, demo_spec, free_port, proxy_env

EMBED = "smollm2-embed"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("embed")
    sock = Path(f"/tmp/llms-embed-{os.getpid()}")
    sock.mkdir(parents=True, exist_ok=True)
    models = ["--model", demo_spec(n_threads=2), "--model", demo_spec(EMBED, n_threads=2, embedding=True)]
    daemon = Daemon(f"ipc://{sock}/rt.sock", models, clean_env(tmp), tmp / "daemon.log")
    daemon.start(ready_models=("smollm2", EMBED))
    port = free_port()
    proxy = Proxy(proxy_env(tmp, daemon.endpoint, port), tmp / "app.db", port, tmp / "proxy.log").start()
    yield proxy
    proxy.stop()
    daemon.terminate()
    shutil.rmtree(sock, ignore_errors=True)


def _client(stack: Proxy, openai_client: Callable[..., OpenAI], **key: Any) -> OpenAI:
    return openai_client(stack.base_url, stack.make_key(**key))


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_similar_sentences_are_closer_than_unrelated_ones(stack: Proxy, openai_client: Callable[..., OpenAI]) -> None:
    client = _client(stack, openai_client)
    texts = ["The cat sleeps on the sofa.", "A cat is sleeping on the couch.", "Stock markets fell sharply today."]
    raw = client.embeddings.with_raw_response.create(model=EMBED, input=texts)
    r = raw.parse()
    vectors = [d.embedding for d in sorted(r.data, key=lambda d: d.index)]
    assert len(vectors) == 3 and len(vectors[0]) == 576  # SmolLM2-135M's hidden size
    assert abs(math.sqrt(sum(x * x for x in vectors[0])) - 1) < 1e-3  # normalised, as OpenAI's are
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[0], vectors[2])
    assert _cosine(vectors[0], vectors[1]) > _cosine(vectors[1], vectors[2])
    rows = stack.query(
        "SELECT endpoint, prompt_tokens, completion_tokens, status, runtime_prompt_tokens FROM token_usage_events "
        "WHERE request_id = ?",
        (raw.headers["x-request-id"],),
    )
    assert rows == [("/v1/embeddings", r.usage.prompt_tokens, 0, 200, rows[0][4])]
    assert r.usage.prompt_tokens == r.usage.total_tokens > 0 and int(rows[0][4]) > 0


def test_base64_is_the_same_vector_as_float(stack: Proxy, openai_client: Callable[..., OpenAI]) -> None:
    key = stack.make_key()
    body: dict[str, Any] = {"model": EMBED, "input": "hello there"}
    headers = {"Authorization": f"Bearer {key}"}
    floats = httpx.post(f"{stack.base_url}/embeddings", json=body, headers=headers, timeout=60).json()
    packed = httpx.post(
        f"{stack.base_url}/embeddings", json={**body, "encoding_format": "base64"}, headers=headers, timeout=60
    ).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": EMBED, "input": "x", "dimensions": 64}, "dimensions"),
        ({"model": EMBED, "input": [[1, 2, 3]]}, "input"),
        ({"model": EMBED, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": EMBED, "input": []}, "input"),
    ],
)
def test_what_cannot_be_done_is_refused_by_name(stack: Proxy, body: dict[str, Any], param: str) -> None:
    r = httpx.post(
        f"{stack.base_url}/embeddings", json=body, headers={"Authorization": f"Bearer {stack.make_key()}"}, timeout=30
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_a_text_model_says_it_is_not_loaded_for_embeddings(stack: Proxy, openai_client: Callable[..., OpenAI]) -> None:
    client = _client(stack, openai_client)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="smollm2", input="hi")
    assert "embedding=true" in str(refused.value)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=EMBED, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert "embeddings" in str(refused.value)


def test_embeddings_follow_the_keys_allow_list_and_quota(stack: Proxy, openai_client: Callable[..., OpenAI]) -> None:
    limited = _client(stack, openai_client, allowed_models=["smollm2"])
    with pytest.raises(openai.PermissionDeniedError):
        limited.embeddings.create(model=EMBED, input="hi")
    poor = _client(stack, openai_client, token_limit=3)
    with pytest.raises(openai.RateLimitError) as quota:
        poor.embeddings.create(model=EMBED, input="a sentence much longer than three tokens, surely")
    assert quota.value.code == "insufficient_quota"


def test_tokenize_count_and_detokenize_with_the_models_tokenizer(stack: Proxy) -> None:
    key = stack.make_key()
    base = f"http://127.0.0.1:{stack.port}"
    headers = {"Authorization": f"Bearer {key}"}
    text = "Hello, world!"
    tokens = httpx.post(f"{base}/extras/tokenize", json={"model": "smollm2", "input": text}, headers=headers).json()
    assert tokens["tokens"] and all(isinstance(t, int) for t in tokens["tokens"])
    count = httpx.post(f"{base}/extras/tokenize/count", json={"model": "smollm2", "input": text}, headers=headers)
    assert count.json() == {"count": len(tokens["tokens"])}
    back = httpx.post(
        f"{base}/extras/detokenize", json={"model": "smollm2", "tokens": tokens["tokens"]}, headers=headers
    )
    assert back.json()["text"].strip() == text
    unauthenticated = httpx.post(f"{base}/extras/tokenize", json={"model": "smollm2", "input": text})
    assert unauthenticated.status_code == 401
    unknown = httpx.post(f"{base}/extras/tokenize", json={"model": "nope", "input": text}, headers=headers)
    assert unknown.status_code == 404
