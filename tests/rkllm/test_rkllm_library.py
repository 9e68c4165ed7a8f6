"""RKLLMLibrary: the 15 functions, declared once, every return code checked (stand-in library)."""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.backends.base import BackendError
from runtime.backends.rkllm import abi
from runtime.backends.rkllm.library import RKLLMLibrary, check, library_file, open_library
from tests.rkllm.fake import FakeLibrary, Repeat, write_script

FUNCTIONS = {
    "rkllm_createDefaultParam",
    "rkllm_init",
    "rkllm_load_lora",
    "rkllm_load_prompt_cache",
    "rkllm_release_prompt_cache",
    "rkllm_destroy",
    "rkllm_run",
    "rkllm_run_async",
    "rkllm_abort",
    "rkllm_is_running",
    "rkllm_clear_kv_cache",
    "rkllm_get_kv_cache_size",
    "rkllm_set_chat_template",
    "rkllm_set_function_tools",
    "rkllm_set_cross_attn_params",
}


@pytest.fixture
def opened(fake_lib: Path, tmp_path: Path) -> Iterator[tuple[RKLLMLibrary, int, list[int]]]:
    lib = open_library(str(fake_lib))
    states: list[int] = []

    def on_result(result: Any, userdata: Any, state: int) -> int:
        states.append(state)
        return 0

    callback = abi.ResultCallback(on_result)
    param = lib.create_default_param()
    param.model_path = str(write_script(tmp_path / "m.rkllm", [Repeat(200, "x")], delay_us=1000)).encode()
    param.extend_param.base_domain_id = 15
    handle = lib.init(param, callback)
    yield lib, handle, states
    lib.destroy(handle)


def test_declares_all_fifteen_functions_with_types(fake_lib: Path) -> None:
    lib = open_library(str(fake_lib))
    assert set(lib._fn) == FUNCTIONS
    assert all(fn.argtypes is not None and fn.restype is not None for fn in lib._fn.values())
    assert lib._fn["rkllm_run"].argtypes[1] is ctypes.POINTER(lib.layout.input)


def test_is_running_while_a_run_blocks_its_thread(opened: tuple[RKLLMLibrary, int, list[int]]) -> None:
    lib, handle, states = opened
    assert not lib.is_running(handle)
    inp, infer = lib.layout.input(), lib.layout.infer_param()
    inp.role, inp.prompt_input = b"user", b"hi"
    worker = threading.Thread(target=lib.run, args=(handle, inp, infer))
    worker.start()
    deadline = time.monotonic() + 2
    while not states and time.monotonic() < deadline:
        time.sleep(0.001)
    assert lib.is_running(handle)
    lib.abort(handle)
    worker.join(2)
    assert not worker.is_alive() and not lib.is_running(handle)
    assert abi.RUN_FINISH not in states and len(states) < 200  # aborted: no FINISH from the stand-in


def test_the_other_functions(opened: tuple[RKLLMLibrary, int, list[int]], fake: FakeLibrary) -> None:
    lib, handle, _ = opened
    assert lib.get_kv_cache_size(handle) == [0]
    lib.clear_kv_cache(handle, keep_system_prompt=False)
    assert fake.record_int("kv_clear.keep_system_prompt") == 0
    lib.set_function_tools(handle, "sys", '[{"name": "f"}]', "tool_response")
    assert fake.text("tools") == '[{"name": "f"}]'
    lib.load_lora(handle, "/tmp/lora.rkllm", "lora")
    lib.load_prompt_cache(handle, "/tmp/cache.bin")
    lib.release_prompt_cache(handle)
    lib.set_cross_attn_params(handle, abi.RKLLMCrossAttnParam())


def test_negative_codes_name_the_function(opened: tuple[RKLLMLibrary, int, list[int]]) -> None:
    lib, handle, _ = opened
    with pytest.raises(BackendError, match="rkllm_run_async"):
        check("rkllm_run_async", lib._fn["rkllm_run_async"](handle, None, None, None))
    with pytest.raises(BackendError, match="rkllm_get_kv_cache_size failed with code -1"):
        lib.get_kv_cache_size(0)
    assert check("rkllm_is_running", 1) == 1


def test_missing_library_and_missing_symbols(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"cannot load the RKLLM runtime .*LLMSERVER_RKLLM_LIBRARY"):
        open_library(str(tmp_path / "librkllmrt.so"))
    with pytest.raises(BackendError, match=r"lacks rkllm_createDefaultParam, .*not an RKLLM 1\.2\.1"):
        RKLLMLibrary(ctypes.CDLL("libc.so.6"), abi.LAYOUT_13, "libc.so.6", None)


def test_finds_the_file_behind_a_bare_name(fake_lib: Path) -> None:
    ctypes.CDLL(str(fake_lib))
    assert library_file(fake_lib.name) == fake_lib
    assert library_file("libdoes-not-exist.so") is None
