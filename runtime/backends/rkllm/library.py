"""``librkllmrt.so``: found, its layout chosen, its 15 functions declared once and checked.

The library is ``$LLMSERVER_RKLLM_LIBRARY`` (a path or a name for the dynamic
loader; default ``librkllmrt.so``), or the ``library`` model parameter.

RKLLM has no version query. The layout comes from the ``layout`` model
parameter if given, otherwise from the version the library file carries in its
bytes (it prints ``rkllm-runtime version: X`` at init). Versions other than the
ones listed in ``SUPPORTED_VERSIONS`` are refused: a wrong guess corrupts memory.

Every call's return code is checked: a negative one raises ``BackendError``
naming the function and the code.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
from ctypes import POINTER, byref, c_char_p, c_int, c_void_p
from pathlib import Path
from typing import Any

from runtime.backends.base import BackendError
from runtime.backends.rkllm import abi
from runtime.backends.rkllm.abi import Layout, LLMHandle

log = logging.getLogger(__name__)

LIBRARY_ENV = "LLMSERVER_RKLLM_LIBRARY"
DEFAULT_LIBRARY = "librkllmrt.so"

SUPPORTED_VERSIONS: dict[str, str] = {"1.2.1": "1.2", "1.2.2": "1.2", "1.2.3": "1.2", "1.3.0": "1.3"}

_MARKER = re.compile(rb"rkllm-runtime version:?[ \t]*v?(\d+\.\d+\.\d+[0-9a-z]*)")
_BARE = re.compile(rb"\x00v?(1\.\d{1,2}\.\d{1,2}(?:b\d+)?)\x00")


def _prototypes(layout: Layout) -> list[tuple[str, Any, list[Any]]]:
    """(name, restype, argtypes) of every function in rkllm.h, in header order."""
    param_p = POINTER(layout.param)
    return [
        # RKLLMParam rkllm_createDefaultParam();
        ("rkllm_createDefaultParam", layout.param, []),
        # int rkllm_init(LLMHandle* handle, RKLLMParam* param, LLMResultCallback callback);  L1.2
        # int rkllm_init(LLMHandle* handle, RKLLMParam* param, RKLLMCallback* callback);     L1.3
        ("rkllm_init", c_int, [POINTER(LLMHandle), param_p, layout.init_callback]),
        # int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter* lora_adapter);
        ("rkllm_load_lora", c_int, [LLMHandle, POINTER(abi.RKLLMLoraAdapter)]),
        # int rkllm_load_prompt_cache(LLMHandle handle, const char* prompt_cache_path);
        ("rkllm_load_prompt_cache", c_int, [LLMHandle, c_char_p]),
        # int rkllm_release_prompt_cache(LLMHandle handle);
        ("rkllm_release_prompt_cache", c_int, [LLMHandle]),
        # int rkllm_destroy(LLMHandle handle);
        ("rkllm_destroy", c_int, [LLMHandle]),
        # int rkllm_run(LLMHandle handle, RKLLMInput* rkllm_input,
        #               RKLLMInferParam* rkllm_infer_params, void* userdata);
        ("rkllm_run", c_int, [LLMHandle, POINTER(layout.input), POINTER(layout.infer_param), c_void_p]),
        # int rkllm_run_async(LLMHandle handle, RKLLMInput* rkllm_input,
        #                     RKLLMInferParam* rkllm_infer_params, void* userdata);
        # Declared for completeness; unreliable across releases, so never called.
        ("rkllm_run_async", c_int, [LLMHandle, POINTER(layout.input), POINTER(layout.infer_param), c_void_p]),
        # int rkllm_abort(LLMHandle handle);
        ("rkllm_abort", c_int, [LLMHandle]),
        # int rkllm_is_running(LLMHandle handle);   1 while running
        ("rkllm_is_running", c_int, [LLMHandle]),
        # int rkllm_clear_kv_cache(LLMHandle handle, int keep_system_prompt, int* start_pos, int* end_pos);
        ("rkllm_clear_kv_cache", c_int, [LLMHandle, c_int, POINTER(c_int), POINTER(c_int)]),
        # int rkllm_get_kv_cache_size(LLMHandle handle, int* cache_sizes);
        ("rkllm_get_kv_cache_size", c_int, [LLMHandle, POINTER(c_int)]),
        # int rkllm_set_chat_template(LLMHandle handle, const char* system_prompt,
        #                             const char* prompt_prefix, const char* prompt_postfix);
        ("rkllm_set_chat_template", c_int, [LLMHandle, c_char_p, c_char_p, c_char_p]),
        # int rkllm_set_function_tools(LLMHandle handle, const char* system_prompt,
        #                              const char* tools, const char* tool_response_str);
        ("rkllm_set_function_tools", c_int, [LLMHandle, c_char_p, c_char_p, c_char_p]),
        # int rkllm_set_cross_attn_params(LLMHandle handle, RKLLMCrossAttnParam* cross_attn_params);
        ("rkllm_set_cross_attn_params", c_int, [LLMHandle, POINTER(abi.RKLLMCrossAttnParam)]),
    ]


def check(name: str, rc: int, context: str = "") -> int:
    """``rc`` if it is not negative; else BackendError naming ``name`` and the code."""
    if rc < 0:
        where = f" ({context})" if context else ""
        raise BackendError(f"{name} failed with code {rc}{where}")
    return rc


class RKLLMLibrary:
    """One loaded ``librkllmrt.so`` bound for one layout.

    It also keeps, per handle, every object the library may still point to
    (the callback, the struct holding it, the model path) until ``destroy``.
    """

    def __init__(self, cdll: ctypes.CDLL, layout: Layout, path: str, version: str | None) -> None:
        self.layout = layout
        self.path = path
        self.version = version
        self._fn: dict[str, Any] = {}
        self._keep: dict[int, tuple[object, ...]] = {}
        missing = [name for name, _, _ in _prototypes(layout) if not hasattr(cdll, name)]
        if missing:
            raise BackendError(
                f"{path} lacks {', '.join(missing)}: not an RKLLM 1.2.1+ runtime "
                f"(1.1.x has no rkllm_set_chat_template, 1.2.0 no rkllm_set_function_tools)"
            )
        for name, restype, argtypes in _prototypes(layout):
            fn = getattr(cdll, name)
            fn.restype, fn.argtypes = restype, argtypes
            self._fn[name] = fn

    def create_default_param(self) -> Any:
        return self._fn["rkllm_createDefaultParam"]()

    def init(self, param: ctypes.Structure, callback: Any) -> int:
        """``rkllm_init``; ``callback`` is an ``abi.ResultCallback`` instance. Returns the handle."""
        handle = LLMHandle()
        if self.layout.per_run_sampling:
            cb_arg: Any = abi.RKLLMCallback(result_callback=callback)
            arg: Any = byref(cb_arg)
        else:
            cb_arg = arg = callback
        rc = self._fn["rkllm_init"](byref(handle), byref(param), arg)
        check("rkllm_init", rc, f"model {(param.model_path or b'').decode(errors='replace')}")
        if not handle.value:
            raise BackendError("rkllm_init returned success but no handle")
        self._keep[handle.value] = (callback, cb_arg, param)
        return handle.value

    def run(self, handle: int, inp: ctypes.Structure, infer: ctypes.Structure) -> int:
        """``rkllm_run``: blocks, calling the callback on this thread once per token."""
        return check("rkllm_run", self._fn["rkllm_run"](handle, byref(inp), byref(infer), None))

    def abort(self, handle: int) -> None:
        check("rkllm_abort", self._fn["rkllm_abort"](handle))

    def is_running(self, handle: int) -> bool:
        return check("rkllm_is_running", self._fn["rkllm_is_running"](handle)) == 1

    def destroy(self, handle: int) -> None:
        try:
            check("rkllm_destroy", self._fn["rkllm_destroy"](handle))
        finally:
            self._keep.pop(handle, None)

    def clear_kv_cache(self, handle: int, keep_system_prompt: bool) -> None:
        """Clear the whole cache (NULL ranges), optionally keeping the system prompt."""
        rc = self._fn["rkllm_clear_kv_cache"](handle, int(keep_system_prompt), None, None)
        check("rkllm_clear_kv_cache", rc)

    def get_kv_cache_size(self, handle: int, n_batch: int = 1) -> list[int]:
        sizes = (c_int * max(1, n_batch))()
        check("rkllm_get_kv_cache_size", self._fn["rkllm_get_kv_cache_size"](handle, sizes))
        return list(sizes)

    def set_chat_template(self, handle: int, system: str, prefix: str, postfix: str) -> None:
        args = (system.encode(), prefix.encode(), postfix.encode())
        check("rkllm_set_chat_template", self._fn["rkllm_set_chat_template"](handle, *args))

    def set_function_tools(self, handle: int, system: str, tools_json: str, tool_response: str) -> None:
        args = (system.encode(), tools_json.encode(), tool_response.encode())
        check("rkllm_set_function_tools", self._fn["rkllm_set_function_tools"](handle, *args))

    def load_lora(self, handle: int, path: str, name: str, scale: float = 1.0) -> None:
        adapter = abi.RKLLMLoraAdapter(path.encode(), name.encode(), scale)
        check("rkllm_load_lora", self._fn["rkllm_load_lora"](handle, byref(adapter)))

    def load_prompt_cache(self, handle: int, path: str) -> None:
        check("rkllm_load_prompt_cache", self._fn["rkllm_load_prompt_cache"](handle, path.encode()))

    def release_prompt_cache(self, handle: int) -> None:
        check("rkllm_release_prompt_cache", self._fn["rkllm_release_prompt_cache"](handle))

    def set_cross_attn_params(self, handle: int, params: abi.RKLLMCrossAttnParam) -> None:
        check("rkllm_set_cross_attn_params", self._fn["rkllm_set_cross_attn_params"](handle, byref(params)))


def open_library(name: str | None = None, layout: str | None = None) -> RKLLMLibrary:
    """Load the library (``name``, else ``$LLMSERVER_RKLLM_LIBRARY``, else the default)."""
    name = name or os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY
    try:
        cdll = ctypes.CDLL(name)
    except OSError as exc:
        raise BackendError(
            f"cannot load the RKLLM runtime {name!r}: {exc}; install librkllmrt.so (docs/rkllm.md) "
            f"or point {LIBRARY_ENV} at it"
        ) from None
    path = library_file(name)
    version = detect_version(path) if path is not None else None
    chosen = choose_layout(layout, version, str(path or name))
    log.info("RKLLM runtime %s, version %s, layout %s", path or name, version or "unknown", chosen)
    return RKLLMLibrary(cdll, chosen, str(path or name), version)


def library_file(name: str) -> Path | None:
    """The file behind ``name``: the path itself, or the mapping the loader chose."""
    if "/" in name:
        return Path(name).resolve()
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and os.path.basename(parts[5]).startswith(name):
            return Path(parts[5])
    return None


def detect_version(path: Path) -> str | None:
    """The RKLLM runtime version written in the library file, if one can be told."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BackendError(f"cannot read {path} to find its RKLLM version: {exc}") from None
    marked = _MARKER.search(data)
    if marked:
        return marked.group(1).decode()
    bare = {m.decode() for m in _BARE.findall(data)}
    known = bare & SUPPORTED_VERSIONS.keys()
    candidates = known or bare
    return candidates.pop() if len(candidates) == 1 else None


def choose_layout(configured: Any, version: str | None, where: str) -> Layout:
    """The layout: the configured one (checked against the version), else the version's."""
    supported = _describe(SUPPORTED_VERSIONS)
    if configured is not None:
        name = str(configured)
        if name not in abi.LAYOUTS:
            raise BackendError(f"layout must be 1.2 or 1.3, got {configured!r}")
        expected = SUPPORTED_VERSIONS.get(version or "")
        if expected is not None and expected != name:
            raise BackendError(f"layout={name} was configured but {where} is RKLLM runtime {version}")
        if version is not None and expected is None:
            log.warning("%s is RKLLM runtime %s (untested); using layout %s", where, version, name)
        return abi.get_layout(name)
    if version is None:
        raise BackendError(
            f"cannot tell the RKLLM runtime version of {where}; set the model parameter "
            f"layout=1.2 (runtime 1.2.1-1.2.3) or layout=1.3 (runtime 1.3.0). Supported: {supported}"
        )
    if version not in SUPPORTED_VERSIONS:
        raise BackendError(
            f"{where} is RKLLM runtime {version}, which is not supported (supported: {supported}); "
            f"a wrong struct layout corrupts memory, so it is refused"
        )
    return abi.get_layout(SUPPORTED_VERSIONS[version])


def _describe(versions: dict[str, str]) -> str:
    groups: dict[str, list[str]] = {}
    for version, layout in versions.items():
        groups.setdefault(layout, []).append(version)
    return "; ".join(f"{', '.join(vs)} (layout {lay})" for lay, vs in groups.items())
