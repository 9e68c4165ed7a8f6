"""The Rockchip NPU as the kernel shows it: is it there, which driver, how busy, how hot.

``check_npu`` runs before a model loads, so that a machine without an NPU gets
a sentence saying what is missing instead of a crash deep inside the runtime.
``LLMSERVER_RKLLM_DEVICE_CHECK=off`` skips it (tests with the stand-in library,
unusual kernels). ``read_npu_status`` is for the admin UI; every field is None
where the board does not expose it (debugfs needs root).

Every function takes ``root`` so that tests can point it at a fake tree.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runtime.backends.base import BackendError

log = logging.getLogger(__name__)

DEVICE_CHECK_ENV = "LLMSERVER_RKLLM_DEVICE_CHECK"
# RKLLM 1.2+ warns "Your rknpu driver version is too low, please upgrade to 0.9.7" below this.
MIN_DRIVER = (0, 9, 7)

_MISC_NODE = "dev/rknpu"
_DRM_CLASS = "sys/class/drm"
_VERSION_FILES = ("sys/kernel/debug/rknpu/version", "proc/debug/rknpu/version", "sys/module/rknpu/version")
_LOAD_FILES = ("sys/kernel/debug/rknpu/load", "proc/debug/rknpu/load")
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_CORE_LOAD = re.compile(r"Core\d+:\s*(\d+)%")
_ANY_LOAD = re.compile(r"(\d+)%")
_SWITCH = {"on": True, "1": True, "true": True, "yes": True}
_SWITCH.update({"off": False, "0": False, "false": False, "no": False})


@dataclass(frozen=True)
class NpuDevice:
    node: str  # the device node, e.g. /dev/dri/renderD129
    driver_version: str | None  # e.g. "0.9.8"; None where unreadable


@dataclass(frozen=True)
class NpuStatus:
    present: bool
    driver_version: str | None
    load_percent: tuple[int, ...] | None  # one value per NPU core
    temperature_c: float | None
    frequency_hz: int | None


def device_check_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    raw = env.get(DEVICE_CHECK_ENV, "on").strip().lower() or "on"
    if raw not in _SWITCH:
        raise BackendError(f"{DEVICE_CHECK_ENV} must be on or off, got {env[DEVICE_CHECK_ENV]!r}")
    return _SWITCH[raw]


def check_npu(root: Path = Path("/"), env: Mapping[str, str] | None = None) -> NpuDevice | None:
    """The NPU, or BackendError saying what is missing; None when the check is off."""
    if not device_check_enabled(env):
        log.info("NPU device check skipped (%s=off)", DEVICE_CHECK_ENV)
        return None
    device = find_npu(root)
    if device is None:
        raise BackendError(
            "no Rockchip NPU found: there is no /dev/rknpu and no /dev/dri/renderD* node bound to the "
            "rknpu driver (see /sys/class/drm/renderD*/device/driver). RKLLM needs an RK3588 or RK3576 "
            "board with the rknpu kernel driver loaded; on other machines use the llamacpp backend. "
            f"Set {DEVICE_CHECK_ENV}=off to skip this check."
        )
    if device.driver_version is None:
        log.info("NPU at %s; driver version not readable (debugfs needs root)", device.node)
    elif _version_tuple(device.driver_version) < MIN_DRIVER:
        log.warning(
            "rknpu driver %s at %s is older than %s, which RKLLM 1.2+ asks for; inference may fail",
            device.driver_version,
            device.node,
            ".".join(map(str, MIN_DRIVER)),
        )
    else:
        log.info("NPU at %s, rknpu driver %s", device.node, device.driver_version)
    return device


def find_npu(root: Path = Path("/")) -> NpuDevice | None:
    node = _find_node(root)
    return None if node is None else NpuDevice(node=node, driver_version=read_driver_version(root))


def _find_node(root: Path) -> str | None:
    if (root / _MISC_NODE).exists():
        return "/" + _MISC_NODE
    drm = root / _DRM_CLASS
    try:
        entries = sorted(drm.glob("renderD*"))
    except OSError:
        return None
    for entry in entries:
        if _driver_name(entry).lower() == "rknpu" and (root / "dev/dri" / entry.name).exists():
            return f"/dev/dri/{entry.name}"
    return None


def _driver_name(drm_entry: Path) -> str:
    try:
        return os.path.basename(os.readlink(drm_entry / "device" / "driver"))
    except OSError:
        pass
    uevent = _read(drm_entry / "device" / "uevent") or ""
    for line in uevent.splitlines():
        if line.startswith("DRIVER="):
            return line.partition("=")[2].strip()
    return ""


def read_driver_version(root: Path = Path("/")) -> str | None:
    for name in _VERSION_FILES:
        match = _VERSION.search(_read(root / name) or "")
        if match:
            return ".".join(match.groups())
    return None


def read_npu_status(root: Path = Path("/")) -> NpuStatus:
    """Whatever the board exposes about its NPU; None for each thing it does not."""
    return NpuStatus(
        present=_find_node(root) is not None,
        driver_version=read_driver_version(root),
        load_percent=_read_load(root),
        temperature_c=_read_temperature(root),
        frequency_hz=_read_frequency(root),
    )


def _read_load(root: Path) -> tuple[int, ...] | None:
    """``NPU load:  Core0:  5%, Core1:  0%, Core2:  0%,`` (RK3588) or ``NPU load:  5%``."""
    for name in _LOAD_FILES:
        text = _read(root / name)
        if text is None:
            continue
        cores = _CORE_LOAD.findall(text) or _ANY_LOAD.findall(text)
        if cores:
            return tuple(int(c) for c in cores)
    return None


def _read_temperature(root: Path) -> float | None:
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        kind = (_read(zone / "type") or "").strip().lower()
        if kind.startswith("npu"):
            raw = _read(zone / "temp")
            if raw is not None and raw.strip().lstrip("-").isdigit():
                return int(raw) / 1000.0
    return None


def _read_frequency(root: Path) -> int | None:
    for dev in sorted((root / "sys/class/devfreq").glob("*npu*")):
        raw = _read(dev / "cur_freq")
        if raw is not None and raw.strip().isdigit():
            return int(raw)
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
