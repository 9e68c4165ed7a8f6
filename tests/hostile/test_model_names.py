"""Issue 14: model names are bounded, and no client-invented name reaches the ledger or /metrics."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.harness import Proxy


def post(proxy: Proxy, key: str, model: str) -> tuple[int, dict[str, object]]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"{proxy.base_url}/chat/completions", data=body, headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_long_and_unknown_model_names_leave_no_trace_in_metrics_or_ledger(proxy: Proxy) -> None:
    """Old code: 110 names of 900 KB on a key with no quota left made /metrics 57 MB and the ledger 19 MB."""
    spent = proxy.make_key("spent", token_limit=0)
    allow_listed = proxy.make_key("allow-listed", allowed_models=["smollm2"])
    for i in range(110):
        status, body = post(proxy, spent, f"{i:04d}" + "m" * 900_000)
        assert status == 400 and body["error"]["code"] == "model_name_too_long"  # type: ignore[index]
    for i in range(60):
        status, _ = post(proxy, spent, f"invented-{i:04d}-" + "x" * 380)
        assert status == 404
        status, _ = post(proxy, allow_listed, f"forbidden-{i:04d}-" + "y" * 380)
        assert status == 403
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/metrics", timeout=10) as response:
        metrics = response.read()
    assert len(metrics) < 64 * 1024, f"/metrics is {len(metrics)} bytes"
    assert b"invented-" not in metrics and b"forbidden-" not in metrics and b"mmmm" not in metrics
    [(rows, longest, total, billed)] = proxy.query(
        "SELECT count(*), max(length(model)), sum(length(model)), sum(prompt_tokens + completion_tokens) "
        "FROM token_usage_events WHERE api_key_id IN (SELECT id FROM api_keys WHERE name IN ('spent', 'allow-listed'))"
    )
    assert rows == 120 and longest == len("(unknown)") and total == 120 * len("(unknown)")
    assert billed == 0  # refused: unbilled
