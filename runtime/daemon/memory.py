"""Will a model fit? Its file size against the memory the kernel says is available.

llama.cpp maps the weights and touches all of them, and RKLLM copies them into memory the NPU
shares with the CPU: a model larger than ``MemAvailable`` ends in the kernel's out-of-memory
killer taking the whole daemon (and every other model) down. Refusing the load with a message
is better. The file size is a lower bound of what a load needs (the context's KV cache comes on
top), so a refusal is never wrong; a load that passes may still be tight.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

from runtime.backends.base import BackendError

log = logging.getLogger(__name__)

MEMINFO = Path("/proc/meminfo")


def available_memory(meminfo: Path = MEMINFO) -> int | None:
    """``MemAvailable`` in bytes, or None where the kernel does not say (not Linux)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(path: str, meminfo: Path = MEMINFO) -> None:
    """Raise :class:`BackendError` when the model file is larger than the available memory."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return  # the backend reports a missing file in its own words
    available = available_memory(meminfo)
    if available is not None and size > available:
        raise BackendError(
            f"not enough memory to load {path}: the model needs at least {size / 2**30:.1f} GiB and "
            f"{available / 2**30:.1f} GiB is available (unload another model or use a smaller quantisation)",
            code="load_failed",
        )


def give_back_memory() -> None:
    """Return the heap pages freed by an unload to the kernel (glibc's ``malloc_trim``).

    glibc keeps freed memory in its arenas for the next allocation: unloading Whisper tiny.en gave
    back 21 of its 112 MiB without this, 82 with it (issue 23), so an unload made no room for the
    next model. A C library without ``malloc_trim`` (musl) returns large blocks by itself.
    """
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is None:
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
