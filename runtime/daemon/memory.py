"""Will a model fit? Its file size against the memory the kernel says is available.

llama.cpp maps the weights and touches all of them, and RKLLM copies them into memory the NPU
shares with the CPU: a model larger than ``MemAvailable`` ends in the kernel's out-of-memory
killer taking the whole daemon (and every other model) down. Refusing the load with a message
is better. The file size is a lower bound of what a load needs (the context's KV cache comes on
top), so a refusal is never wrong; a load that passes may still be tight.
"""

from __future__ import annotations

import os
from pathlib import Path

from runtime.backends.base import BackendError

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
