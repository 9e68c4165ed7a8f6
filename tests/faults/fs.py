"""Small and read-only filesystems for fault tests: tmpfs mounts (the tests run as root here)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def can_mount() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", readonly: bool = False) -> Iterator[Path]:
    """``path`` as a fresh tmpfs of ``size`` (read-only if asked), unmounted afterwards.

    Without root a read-only directory is made with chmod instead (root ignores modes, so it needs
    the mount); a size-limited filesystem needs root.
    """
    path.mkdir(parents=True, exist_ok=True)
    if not can_mount():
        if not readonly:
            raise AssertionError("a size-limited filesystem needs root (mount -t tmpfs); run the fault tests as root")
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    options = f"size={size},mode=0700" + (",ro" if readonly else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, size: str) -> None:
    """Give a mounted tmpfs a new size (space returns)."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)
