"""The daemon's settings from the environment: defaults, and a clear error for bad values."""

from __future__ import annotations

import pytest

from runtime.api.errors import ModelSpecError
from runtime.daemon.settings import load_runtime_settings


def test_defaults() -> None:
    s = load_runtime_settings({"LLMSERVER_RUNTIME_DIR": "/tmp/x"})
    assert s.endpoint == "ipc:///tmp/x/runtime.sock"
    assert (s.queue_depth, s.grace_seconds, s.stream_interval_ms, s.compute_nice) == (8, 10.0, 20, 5)


def test_values_are_read() -> None:
    s = load_runtime_settings(
        {
            "LLMSERVER_RUNTIME_ENDPOINT": "tcp://127.0.0.1:5555",
            "LLMSERVER_RUNTIME_QUEUE_DEPTH": "3",
            "LLMSERVER_RUNTIME_STREAM_INTERVAL_MS": "0",
            "LLMSERVER_RUNTIME_COMPUTE_NICE": "0",
        }
    )
    assert (s.endpoint, s.queue_depth, s.stream_interval_ms, s.compute_nice) == ("tcp://127.0.0.1:5555", 3, 0, 0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LLMSERVER_RUNTIME_STREAM_INTERVAL_MS", "fast", "must be an integer"),
        ("LLMSERVER_RUNTIME_STREAM_INTERVAL_MS", "5000", "between 0 and 1000"),
        ("LLMSERVER_RUNTIME_COMPUTE_NICE", "-5", "between 0 and 19"),
        ("LLMSERVER_RUNTIME_QUEUE_DEPTH", "0", "between 1 and 10000"),
        ("LLMSERVER_RUNTIME_ENDPOINT", "http://x", "must start with ipc:// or tcp://"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str, message: str) -> None:
    with pytest.raises(ModelSpecError, match=message) as err:
        load_runtime_settings({name: value})
    assert name in str(err.value)
