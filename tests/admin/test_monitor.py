"""Issue 19, the dashboard's machine monitor on boards this machine is not: an RK3588 whose debugfs
only root may read, its thermal zones by name, an NVIDIA card that reports some fields as ``[N/A]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin_ui.monitor import SystemMonitor
from proxy.errors import SettingsError
from proxy.settings import load_settings


def zone(board: Path, n: int, kind: str, milli: str) -> None:
    path = board / f"sys/class/thermal/thermal_zone{n}"
    path.mkdir(parents=True)
    (path / "type").write_text(f"{kind}\n")
    (path / "temp").write_text(f"{milli}\n")


def test_an_rk3588_without_readable_debugfs_has_an_npu_without_a_load(tmp_path: Path) -> None:
    """issue 19: the service user cannot read /sys/kernel/debug: the NPU is there, its load unknown."""
    board = tmp_path / "board"
    (board / "sys/class/devfreq/fdab0000.npu").mkdir(parents=True)
    (board / "sys/class/devfreq/fdab0000.npu/cur_freq").write_text("800000000\n")
    for n, (kind, milli) in enumerate((("soc-thermal", "45250"), ("bigcore0-thermal", "47875"), ("npu-thermal", "x"))):
        zone(board, n, kind, milli)
    zone(board, 10, "npu-thermal", "40100")  # zone 10 after zone 2, not between 1 and 2
    sample = SystemMonitor(tmp_path, root=board).sample()
    assert sample["npu"] == {"load": None, "freq_hz": 800_000_000, "temp_c": 40.1}
    assert sample["temperatures"] == [
        {"name": "soc", "temp_c": 45.2},
        {"name": "bigcore0", "temp_c": 47.9},
        {"name": "npu", "temp_c": 40.1},
    ]


def test_nvidia_fields_it_does_not_report_are_absent(tmp_path: Path) -> None:
    """A card without a temperature sensor answers ``[N/A]``: the line shows what is known."""
    board = tmp_path / "board"
    (board / "usr/bin").mkdir(parents=True)
    smi = board / "usr/bin/nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'Tesla T4, 3, 512, 15360, [N/A]'\n")
    smi.chmod(0o755)
    gpu = SystemMonitor(tmp_path, root=board).gpu()
    assert gpu == {
        "name": "Tesla T4",
        "load": 3,
        "freq_hz": None,
        "memory_used": 512 * 1024 * 1024,
        "memory_total": 15360 * 1024 * 1024,
        "temp_c": None,
    }
    smi.chmod(0o644)  # not executable: no NVIDIA GPU
    assert SystemMonitor(tmp_path, root=board).gpu() is None


def test_the_monitor_root_must_be_a_directory(tmp_path: Path) -> None:
    """``LLMSERVER_MONITOR_ROOT``: a host root mounted into a container; a wrong one stops start-up."""
    assert load_settings({"LLMSERVER_MONITOR_ROOT": str(tmp_path)}).monitor_root == tmp_path
    assert load_settings({}).monitor_root == Path("/")
    with pytest.raises(SettingsError, match=r"LLMSERVER_MONITOR_ROOT=.*no such directory"):
        load_settings({"LLMSERVER_MONITOR_ROOT": str(tmp_path / "absent")})
