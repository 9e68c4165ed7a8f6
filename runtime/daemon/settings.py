"""The daemon's settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.api.errors import ModelSpecError
from runtime.api.transport import default_endpoint

DEFAULT_QUEUE_DEPTH = 8
# Text of one request is sent at most once per this many ms after its first token: each frame wakes
# four threads, which on a small board steal the cores llama.cpp decodes on (0: every token at once).
DEFAULT_STREAM_INTERVAL_MS = 20
# How much lower than the daemon's own threads the model threads run, so that moving a token to the
# client is never queued behind the next token's arithmetic (0: same priority).
DEFAULT_COMPUTE_NICE = 5


@dataclass(frozen=True)
class RuntimeSettings:
    endpoint: str
    queue_depth: int
    grace_seconds: float
    log_level: str
    stream_interval_ms: int = DEFAULT_STREAM_INTERVAL_MS
    compute_nice: int = DEFAULT_COMPUTE_NICE
    log_format: str = "text"


def load_runtime_settings(env: Mapping[str, str] | None = None) -> RuntimeSettings:
    env = os.environ if env is None else env
    endpoint = env.get("LLMSERVER_RUNTIME_ENDPOINT") or default_endpoint(env)
    check_endpoint(endpoint)
    return RuntimeSettings(
        endpoint=endpoint,
        queue_depth=_int_var(env, "LLMSERVER_RUNTIME_QUEUE_DEPTH", DEFAULT_QUEUE_DEPTH, 1, 10_000),
        grace_seconds=float(_int_var(env, "LLMSERVER_RUNTIME_GRACE_SECONDS", 10, 0, 3600)),
        log_level=env.get("LLMSERVER_LOG_LEVEL", "INFO").upper(),
        stream_interval_ms=_int_var(env, "LLMSERVER_RUNTIME_STREAM_INTERVAL_MS", DEFAULT_STREAM_INTERVAL_MS, 0, 1000),
        compute_nice=_int_var(env, "LLMSERVER_RUNTIME_COMPUTE_NICE", DEFAULT_COMPUTE_NICE, 0, 19),
        log_format=_log_format(env),
    )


def check_endpoint(endpoint: str) -> None:
    if not endpoint.startswith(("ipc://", "tcp://")):
        raise ModelSpecError(f"LLMSERVER_RUNTIME_ENDPOINT must start with ipc:// or tcp://, got {endpoint!r}")


def _int_var(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ModelSpecError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ModelSpecError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _log_format(env: Mapping[str, str]) -> str:
    value = (env.get("LLMSERVER_LOG_FORMAT") or "text").strip().lower()
    if value not in ("text", "json"):
        raise ModelSpecError(f"LLMSERVER_LOG_FORMAT must be text or json, got {value!r}")
    return value
