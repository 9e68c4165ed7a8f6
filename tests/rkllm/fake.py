"""Build and drive the stand-in RKLLM library (``fake_rkllm.c``); no pytest here.

Used by the tests (through ``conftest.py``) and by ``tests/bench/bench_rkllm.py``.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_rkllm.c")
DEFAULT_VERSIONS = {"1.2": "1.2.3", "1.3": "1.3.0"}


def compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc")


def build_fake(out_dir: Path, layout: str, version: str | None = None, bare: bool = False) -> Path:
    """Compile the stand-in for ``layout`` ("1.2"/"1.3"); returns the .so path (cached)."""
    version = version or DEFAULT_VERSIONS[layout]
    name = f"librkllmrt-fake-{layout}-{version}{'-bare' if bare else ''}.so"
    out = out_dir / name
    if out.exists():
        return out
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc) to build the stand-in RKLLM library")
    flags = [f"-DRKLLM_LAYOUT_{layout.replace('.', '')}", f'-DFAKE_VERSION="{version}"']
    if bare:
        flags.append("-DFAKE_BARE_VERSION")
    tmp = out.with_suffix(".tmp")
    cmd = [cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-o", str(tmp), str(SOURCE)]
    subprocess.run([*cmd, "-lpthread"], check=True, capture_output=True, text=True)
    tmp.rename(out)
    return out


@dataclass(frozen=True)
class Waiting:
    """A token whose bytes are an incomplete UTF-8 character (RKLLM_RUN_WAITING)."""

    data: bytes


@dataclass(frozen=True)
class Repeat:
    """``text`` as ``count`` tokens."""

    count: int
    text: str


Token = str | bytes | Waiting | Repeat


def _escape(data: bytes) -> str:
    out = []
    for b in data:
        ch = chr(b)
        out.append(ch if 0x20 <= b < 0x7F and ch != "\\" else f"\\x{b:02x}")
    return "".join(out)


def write_script(path: Path, tokens: list[Token], **directives: int) -> Path:
    """A model file for the stand-in: ``tokens`` in order, then ``directives`` (delay_us=...)."""
    lines = [f"{key} {value}" for key, value in directives.items()]
    for tok in tokens:
        if isinstance(tok, Waiting):
            lines.append(f"w {_escape(tok.data)}")
        elif isinstance(tok, Repeat):
            lines.append(f"r {tok.count} {_escape(tok.text.encode())}")
        else:
            lines.append(f"t {_escape(tok if isinstance(tok, bytes) else tok.encode())}")
    path.write_text("\n".join(lines) + "\n")
    return path


class FakeLibrary:
    """The stand-in's test-only exports, in this process (same dlopen handle as the binding)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        self._lib.fake_get_record.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        self._lib.fake_get_record.restype = ctypes.c_int
        self._lib.fake_calls.argtypes = [ctypes.c_char_p]
        self._lib.fake_calls.restype = ctypes.c_long
        self._lib.fake_max_concurrent.restype = ctypes.c_int

    def record(self, name: str) -> bytes | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._lib.fake_get_record(name.encode(), buf, len(buf))
        return None if n < 0 else buf.raw[:n]

    def record_int(self, name: str) -> int | None:
        raw = self.record(name)
        return None if raw is None else struct.unpack("<q", raw)[0]

    def text(self, name: str) -> str | None:
        raw = self.record(name)
        return None if raw is None else raw.decode()

    def calls(self, name: str) -> int:
        return int(self._lib.fake_calls(name.encode()))

    def max_concurrent(self) -> int:
        return int(self._lib.fake_max_concurrent())

    def reset(self) -> None:
        self._lib.fake_reset()
