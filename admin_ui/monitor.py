"""The system monitor of the dashboard: CPU per core, memory, the data directory's disk, NPU, GPU
and the thermal zones.

Everything is read from the kernel's files, never from a library that might be missing: CPU from
the difference between two ``/proc/stat`` samples, memory from ``/proc/meminfo``, the disk with
``statvfs``. The NPU where the board exposes it (Rockchip RK3588: the rknpu driver's ``load``
file in debugfs, its devfreq node for the frequency, the ``npu-thermal`` zone for temperature);
the GPU through ``nvidia-smi`` (NVIDIA: load, memory, temperature) or devfreq (Mali, with the
``gpu-thermal`` zone); every ``/sys/class/thermal/thermal_zone*`` as a named temperature
(``soc-thermal`` is shown as ``soc``). What a machine does not have is reported as absent
(``None``, an empty list, or a load of ``None`` when debugfs is readable by root only), so the
page says "not available" instead of showing zeros.

``root`` (``LLMSERVER_MONITOR_ROOT``) is where ``/proc``, ``/sys`` (and, other than ``/``,
``usr/bin/nvidia-smi``) are found: the host's root as mounted into a container (as node_exporter's
``--path.rootfs``), or a fake board in the tests.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


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
            "temperatures": self.temperatures(),
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
        return {"load": loads or None, "freq_hz": freq, "temp_c": temp}

    def gpu(self) -> dict[str, Any] | None:
        """NVIDIA through nvidia-smi, else a Mali GPU through devfreq; None when there is none."""
        found = self._nvidia_smi()
        if found:
            return _nvidia(found)
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
            "memory_used": None,  # shared with the system: see memory
            "memory_total": None,
            "temp_c": _thermal(self._path("/sys/class/thermal"), ("gpu",)),
        }

    def _nvidia_smi(self) -> str | None:
        """``nvidia-smi`` on the PATH; under another root, that root's ``usr/bin/nvidia-smi``."""
        if self.root == Path("/"):
            return shutil.which("nvidia-smi")
        program = self._path("/usr/bin/nvidia-smi")
        return str(program) if os.access(program, os.X_OK) else None

    def temperatures(self) -> list[dict[str, Any]]:
        """Every thermal zone with a readable temperature: its type without ``-thermal``, in °C."""
        found = []
        for zone in _zones(self._path("/sys/class/thermal")):
            temp = _celsius(_read(zone / "temp"))
            name = _read(zone / "type").strip().removesuffix("-thermal").removesuffix("_thermal")
            if temp is not None and name:
                found.append({"name": name[:40], "temp_c": temp})
        return found


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


def _zones(directory: Path) -> list[Path]:
    """``thermal_zone0``, ``thermal_zone1``, ... in number order."""
    try:
        zones = [z for z in directory.glob("thermal_zone*") if z.name[12:].isdigit()]
    except OSError:
        return []
    return sorted(zones, key=lambda z: int(z.name[12:]))


def _celsius(text: str) -> float | None:
    """A thermal zone's ``temp`` (millidegrees) in degrees, to a tenth (as shown); None when unreadable."""
    text = text.strip()
    return round(int(text) / 1000.0, 1) if text.lstrip("-").isdigit() and len(text) < 10 else None


def _thermal(directory: Path, words: tuple[str, ...]) -> float | None:
    for zone in _zones(directory):
        if any(w in _read(zone / "type").lower() for w in words):
            temp = _celsius(_read(zone / "temp"))
            if temp is not None:
                return temp
    return None


def _nvidia(program: str) -> dict[str, Any] | None:
    query = "--query-gpu=name,utilization.gpu,memory.used,memory.total,temperature.gpu"
    try:
        out = subprocess.run(
            [program, query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=2
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
        "name": name[:80],
        "load": _number(load, int),
        "freq_hz": None,
        "memory_used": _number(used, lambda v: int(v) * mib),
        "memory_total": _number(total, lambda v: int(v) * mib),
        "temp_c": _number(temp, float),
    }


def _number(text: str, convert: Callable[[str], T]) -> T | None:
    """nvidia-smi's field, or None for ``[N/A]`` (a field a card does not report)."""
    try:
        return convert(text)
    except ValueError:
        return None
