"""The system monitor of the dashboard: CPU per core, memory, the data directory's disk, NPU and GPU.

Everything is read from the kernel's files, never from a library that might be missing: CPU from
the difference between two ``/proc/stat`` samples, memory from ``/proc/meminfo``, the disk with
``statvfs``. The NPU where the board exposes it (Rockchip RK3588: the rknpu driver's ``load``
file in debugfs, its devfreq node for the frequency, the ``npu`` thermal zone for temperature);
the GPU through ``nvidia-smi`` (NVIDIA) or devfreq (Mali). What a machine does not have is
reported as absent (``None``), so the page can say "no NPU" instead of showing zeros.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class SystemMonitor:
    """Samples the machine; ``root`` lets tests point it at a fake ``/proc`` and ``/sys`` tree."""

    data_dir: Path
    root: Path = Path("/")
    _last_cpu: list[tuple[int, int]] = field(default_factory=list)

    def _path(self, text: str) -> Path:
        return self.root / text.lstrip("/")

    def sample(self) -> dict[str, Any]:
        """One snapshot (blocking file reads: call it in a thread)."""
        return {
            "time": time.time(),
            "cpu": self.cpu(),
            "memory": self.memory(),
            "disk": self.disk(),
            "npu": self.npu(),
            "gpu": self.gpu(),
        }

    def cpu(self) -> list[float]:
        """Busy percentage per core since the previous sample (first call: since boot)."""
        now: list[tuple[int, int]] = []
        for line in _read(self._path("/proc/stat")).splitlines():
            if re.match(r"cpu\d+ ", line):
                values = [int(v) for v in line.split()[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                now.append((sum(values), idle))
        previous = self._last_cpu if len(self._last_cpu) == len(now) else [(0, 0)] * len(now)
        self._last_cpu = now
        result = []
        for (total, idle), (t0, i0) in zip(now, previous, strict=True):
            span = total - t0
            result.append(round(100.0 * (1 - (idle - i0) / span), 1) if span > 0 else 0.0)
        return result

    def memory(self) -> dict[str, int] | None:
        info = {}
        for line in _read(self._path("/proc/meminfo")).splitlines():
            name, _, rest = line.partition(":")
            if rest.strip():
                info[name] = int(rest.split()[0]) * 1024
        if "MemTotal" not in info:
            return None
        available = info.get("MemAvailable", info.get("MemFree", 0))
        return {"total": info["MemTotal"], "used": info["MemTotal"] - available}

    def disk(self) -> dict[str, Any] | None:
        try:
            usage = shutil.disk_usage(self.data_dir if self.data_dir.exists() else self.data_dir.parent)
        except OSError:
            return None
        return {"path": str(self.data_dir), "total": usage.total, "used": usage.used}

    def npu(self) -> dict[str, Any] | None:
        """RK3588-style NPU figures, or None when the board exposes none."""
        load_text = _read(self._path("/sys/kernel/debug/rknpu/load"))
        freq = _devfreq(self._path("/sys/class/devfreq"), ("npu",))
        temp = _thermal(self._path("/sys/class/thermal"), ("npu",))
        if not load_text and freq is None and temp is None:
            return None
        loads = [int(v) for v in re.findall(r"Core\d+:\s*(\d+)%", load_text)]
        if not loads:
            loads = [int(v) for v in re.findall(r"(\d+)%", load_text)]
        return {"load": loads, "freq_hz": freq, "temp_c": temp}

    def gpu(self) -> dict[str, Any] | None:
        """NVIDIA through nvidia-smi, else a Mali GPU through devfreq; None when there is none."""
        if shutil.which("nvidia-smi") and self.root == Path("/"):
            return _nvidia()
        devfreq = self._path("/sys/class/devfreq")
        freq = _devfreq(devfreq, ("gpu", "mali"))
        if freq is None:
            return None
        load = None
        for node in _nodes(devfreq, ("gpu", "mali")):
            match = re.match(r"(\d+)@", _read(node / "load"))
            if match:
                load = int(match.group(1))
        return {
            "name": "Mali",
            "load": load,
            "freq_hz": freq,
            "temp_c": _thermal(self._path("/sys/class/thermal"), ("gpu",)),
        }


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # absent, or debugfs not readable by this user
        return ""


def _nodes(directory: Path, words: tuple[str, ...]) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if any(w in p.name.lower() for w in words))
    except OSError:
        return []


def _devfreq(directory: Path, words: tuple[str, ...]) -> int | None:
    for node in _nodes(directory, words):
        text = _read(node / "cur_freq").strip()
        if text.isdigit():
            return int(text)
    return None


def _thermal(directory: Path, words: tuple[str, ...]) -> float | None:
    try:
        zones = sorted(directory.glob("thermal_zone*"))
    except OSError:
        return None
    for zone in zones:
        if any(w in _read(zone / "type").lower() for w in words):
            text = _read(zone / "temp").strip()
            if text.lstrip("-").isdigit():
                return int(text) / 1000.0
    return None


def _nvidia() -> dict[str, Any] | None:
    query = "--query-gpu=name,utilization.gpu,memory.used,memory.total,temperature.gpu"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=2
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("nvidia-smi failed: %s", exc)
        return None
    parts = [p.strip() for p in out.splitlines()[0].split(",")] if out.strip() else []
    if len(parts) != 5:
        return None
    name, load, used, total, temp = parts
    mib = 1024 * 1024
    return {
        "name": name,
        "load": int(load),
        "memory_used": int(used) * mib,
        "memory_total": int(total) * mib,
        "temp_c": float(temp),
    }
