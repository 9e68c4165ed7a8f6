"""The real RKLLM runtime on a real NPU. Skipped unless asked for.

Run on an RK3588/RK3576 board with librkllmrt.so installed (docs/rkllm.md):

    LLMSERVER_RKLLM_MODEL=/path/model.rkllm LLMSERVER_RKLLM_PLATFORM=rk3588 pytest tests/rkllm --run-npu

(``LLMSERVER_TEST_NPU=1`` works instead of ``--run-npu``.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.api.models import ModelConfig
from runtime.api.protocol import GenerateSpec, SamplingParams
from runtime.backends.rkllm.backend import RKLLMBackend
from runtime.backends.rkllm.device import read_npu_status

pytestmark = pytest.mark.npu

# Read at import: the suite's autouse fixture clears these for the stand-in tests.
LIBRARY = os.environ.get("LLMSERVER_RKLLM_LIBRARY")
MODEL = os.environ.get("LLMSERVER_RKLLM_MODEL")
PLATFORM = os.environ.get("LLMSERVER_RKLLM_PLATFORM", "rk3588")


@pytest.fixture
def board(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[RKLLMBackend]:
    asked = request.config.getoption("--run-npu", default=False) or os.environ.get("LLMSERVER_TEST_NPU") == "1"
    if not asked:
        pytest.skip("needs a Rockchip board with an NPU: run with --run-npu or LLMSERVER_TEST_NPU=1")
    if not MODEL or not Path(MODEL).is_file():
        pytest.skip(f"LLMSERVER_RKLLM_MODEL must name a .rkllm file on this board (got {MODEL!r})")
    monkeypatch.setenv("LLMSERVER_RKLLM_DEVICE_CHECK", "on")
    if LIBRARY:
        monkeypatch.setenv("LLMSERVER_RKLLM_LIBRARY", LIBRARY)
    backend = RKLLMBackend()
    backend.load(ModelConfig("board", "rkllm", MODEL, {"target_platform": PLATFORM, "max_context_len": 1024}))
    yield backend
    backend.unload()


def _ask(text: str, **params: Any) -> GenerateSpec:
    return GenerateSpec("board", ({"role": "user", "content": text},), None, SamplingParams(**params))


def test_npu_is_visible(board: RKLLMBackend) -> None:
    status = read_npu_status()
    assert status.present
    assert board.domain_id is not None and board.layout in ("1.2", "1.3")


def test_streams_an_answer_with_the_models_counts(board: RKLLMBackend) -> None:
    pieces: list[str] = []
    out = board.generate(_ask("What is the capital of France? One word.", max_tokens=32), pieces.append, lambda: False)
    text = "".join(pieces)
    assert text.strip(), "the model said nothing"
    assert "\ufffd" not in text
    assert out.prompt_tokens > 0 and 1 <= out.completion_tokens <= 32
    assert out.finish_reason in ("stop", "length")
    assert out.prefill_ms > 0 and out.decode_ms > 0


def test_abort_ends_the_run_quickly(board: RKLLMBackend) -> None:
    pieces: list[str] = []
    started = time.monotonic()
    out = board.generate(
        _ask("Count from 1 to 500, one number per line.", max_tokens=600),
        pieces.append,
        lambda: len(pieces) >= 3,
    )
    assert out.finish_reason == "aborted"
    assert len(pieces) == 3
    assert time.monotonic() - started < 10
    again: list[str] = []
    assert board.generate(_ask("Say hi.", max_tokens=8), again.append, lambda: False).completion_tokens >= 1
