"""Fixtures for the RKLLM backend tests: the stand-in library, model scripts, loaded backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.api.models import ModelConfig
from runtime.backends.rkllm.backend import RKLLMBackend
from tests.rkllm.fake import FakeLibrary, Token, build_fake, compiler, write_script

LAYOUTS = ("1.2", "1.3")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "npu: needs a real Rockchip board with librkllmrt.so (--run-npu)")


@pytest.fixture(scope="session")
def fake_builder(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``build(layout, version=None, bare=False) -> .so path``, compiled once per session."""
    if compiler() is None:
        pytest.skip("no C compiler (cc) to build the stand-in RKLLM library")
    out_dir = tmp_path_factory.mktemp("fake-rkllm")

    def build(layout: str, version: str | None = None, bare: bool = False) -> Path:
        return build_fake(out_dir, layout, version, bare)

    return build


@pytest.fixture(params=LAYOUTS, ids=lambda v: f"L{v}")
def layout(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake_lib(layout: str, fake_builder: Callable[..., Path]) -> Path:
    return fake_builder(layout)


@pytest.fixture
def fake(fake_lib: Path) -> FakeLibrary:
    lib = FakeLibrary(fake_lib)
    lib.reset()
    return lib


@pytest.fixture(autouse=True)
def _rkllm_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMSERVER_RKLLM_DEVICE_CHECK", "off")
    monkeypatch.delenv("LLMSERVER_RKLLM_LIBRARY", raising=False)
    monkeypatch.setenv("FAKE_RKLLM_LOG", str(tmp_path / "fake-rkllm.log"))


@pytest.fixture
def script(tmp_path: Path) -> Callable[..., Path]:
    """``script(tokens, name="model.rkllm", **directives) -> model file path``."""

    def make(tokens: list[Token], name: str = "model.rkllm", **directives: int) -> Path:
        return write_script(tmp_path / name, tokens, **directives)

    return make


@pytest.fixture
def load_from() -> Iterator[Callable[..., RKLLMBackend]]:
    """``load_from(library, model, name="m", **params) -> loaded RKLLMBackend``; unloaded afterwards."""
    loaded: list[RKLLMBackend] = []

    def make(library: Path | None, model: Path | str, name: str = "m", **params: Any) -> RKLLMBackend:
        if library is not None:
            params["library"] = str(library)
        backend = RKLLMBackend()
        backend.load(ModelConfig(name, "rkllm", str(model), params))
        loaded.append(backend)
        return backend

    yield make
    for backend in loaded:
        backend.unload()


@pytest.fixture
def load(fake_lib: Path, load_from: Callable[..., RKLLMBackend]) -> Callable[..., RKLLMBackend]:
    """``load(model, name="m", **params)`` with this test's layout of the stand-in."""

    def make(model: Path | str, name: str = "m", **params: Any) -> RKLLMBackend:
        return load_from(fake_lib, model, name, **params)

    return make
