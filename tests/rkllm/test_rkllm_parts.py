"""The small parts of the RKLLM backend: settings, chat turns, device files, domains, versions."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from runtime.api.protocol import GenerateSpec, SamplingParams
from runtime.backends.base import BackendError
from runtime.backends.rkllm.chat import build_turn
from runtime.backends.rkllm.device import check_npu, find_npu, read_npu_status
from runtime.backends.rkllm.domain import DomainAllocator
from runtime.backends.rkllm.library import SUPPORTED_VERSIONS, choose_layout, detect_version
from runtime.backends.rkllm.settings import KNOWN_PARAMS, ChatTemplate, parse_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rkllm.md"


def test_every_parameter_is_documented() -> None:
    text = DOCS.read_text()
    missing = [p for p in sorted(KNOWN_PARAMS) if f"`{p}`" not in text]
    assert not missing, f"docs/rkllm.md does not document: {missing}"
    for version in SUPPORTED_VERSIONS:
        assert version in text


def test_settings_types_and_defaults() -> None:
    s = parse_settings({"max_context_len": 4096, "top_p": 1, "target_platform": "RK3576", "layout": 1.3})
    assert (s.max_context_len, s.top_p, s.target_platform, s.layout) == (4096, 1.0, "rk3576", "1.3")
    assert s.cpus == (0xF0, 4) and s.skip_special_token and s.embed_flash and s.template is None
    assert parse_settings({"enabled_cpus_mask": "0x0F", "enabled_cpus_num": 2}).cpus == (0x0F, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"top_k": True}, "top_k must be an integer"),
        ({"top_p": 1.5}, r"top_p must be in \[0, 1\]"),
        ({"embed_flash": "yes"}, "embed_flash must be true or false"),
        ({"layout": 1.1}, "layout must be 1.2 or 1.3"),
        ({"prompt_prefix": "<u>"}, "set all of system_template, prompt_prefix, prompt_postfix"),
        ({"system_template": "x", "prompt_prefix": "", "prompt_postfix": ""}, "must contain {system}"),
    ],
)
def test_bad_settings(params: dict[str, object], message: str) -> None:
    with pytest.raises(BackendError, match=message):
        parse_settings(params)


def test_template_escapes_and_rendering() -> None:
    s = parse_settings({"system_template": "<s>{system}\\n", "prompt_prefix": "<u>", "prompt_postfix": "\\t"})
    assert s.template == ChatTemplate("<s>{system}\n", "<u>", "\t")
    assert s.template.render("Hi {x}") == ("<s>Hi {x}\n", "<u>", "\t")
    assert s.template.render("") == ("", "<u>", "\t")


def _spec(*messages: tuple[str, str]) -> GenerateSpec:
    return GenerateSpec("m", tuple({"role": r, "content": c} for r, c in messages), None, SamplingParams())


def test_chat_turns() -> None:
    assert build_turn(_spec(("user", "hi")), None).text == "hi"
    turn = build_turn(_spec(("system", "A"), ("developer", "B"), ("user", "hi")), None)
    assert (turn.role, turn.text, turn.template) == ("user", "A\n\nB\n\nhi", None)
    template = ChatTemplate("[{system}]", "<", ">")
    turn = build_turn(_spec(("user", "hi")), template, default_system="D")
    assert (turn.text, turn.template) == ("hi", ("[D]", "<", ">"))
    assert build_turn(_spec(("user", "hi")), None, default_system="D").text == "D\n\nhi"
    with pytest.raises(BackendError, match="no user message"):
        build_turn(_spec(("system", "only")), None)
    with pytest.raises(BackendError, match="NUL"):
        build_turn(_spec(("user", "a\x00b")), None)


def _fake_board(root: Path, *, misc: bool = False) -> Path:
    (root / "dev/dri").mkdir(parents=True)
    (root / "dev/dri/renderD128").touch()
    (root / "dev/dri/renderD129").touch()
    gpu = root / "sys/devices/gpu"
    npu = root / "sys/devices/fdab0000.npu"
    for dev, driver in ((gpu, "panfrost"), (npu, "RKNPU")):
        (dev / "drv").mkdir(parents=True)
        (root / f"sys/bus/platform/drivers/{driver}").mkdir(parents=True)
    drm = root / "sys/class/drm"
    drm.mkdir(parents=True)
    for name, dev, driver in (("renderD128", gpu, "panfrost"), ("renderD129", npu, "RKNPU")):
        (drm / name).mkdir()
        os.symlink(dev, drm / name / "device")
        os.symlink(root / f"sys/bus/platform/drivers/{driver}", dev / "driver")
    if misc:
        (root / "dev/rknpu").touch()
    (root / "sys/kernel/debug/rknpu").mkdir(parents=True)
    (root / "sys/kernel/debug/rknpu/version").write_text("RKNPU driver: v0.9.8\n")
    (root / "sys/kernel/debug/rknpu/load").write_text("NPU load:  Core0: 12%, Core1:  0%, Core2:  3%,\n")
    zone = root / "sys/class/thermal/thermal_zone6"
    zone.mkdir(parents=True)
    (zone / "type").write_text("npu-thermal\n")
    (zone / "temp").write_text("41625\n")
    freq = root / "sys/class/devfreq/fdab0000.npu"
    freq.mkdir(parents=True)
    (freq / "cur_freq").write_text("1000000000\n")
    return root


def test_finds_the_render_node_bound_to_rknpu(tmp_path: Path) -> None:
    device = find_npu(_fake_board(tmp_path))
    assert device is not None and device.node == "/dev/dri/renderD129" and device.driver_version == "0.9.8"
    assert check_npu(tmp_path, env={}) == device


def test_finds_the_misc_device(tmp_path: Path) -> None:
    device = find_npu(_fake_board(tmp_path, misc=True))
    assert device is not None and device.node == "/dev/rknpu"


def test_status_of_a_board_and_of_a_machine_without_npu(tmp_path: Path) -> None:
    status = read_npu_status(_fake_board(tmp_path / "board"))
    assert status.present and status.driver_version == "0.9.8"
    assert status.load_percent == (12, 0, 3) and status.temperature_c == pytest.approx(41.625)
    assert status.frequency_hz == 1_000_000_000
    (tmp_path / "bare").mkdir()
    bare = read_npu_status(tmp_path / "bare")
    assert (bare.present, bare.driver_version, bare.load_percent, bare.temperature_c, bare.frequency_hz) == (
        False,
        None,
        None,
        None,
        None,
    )


def test_check_says_what_is_missing_and_can_be_switched_off(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"no Rockchip NPU found.*LLMSERVER_RKLLM_DEVICE_CHECK=off"):
        check_npu(tmp_path, env={})
    assert check_npu(tmp_path, env={"LLMSERVER_RKLLM_DEVICE_CHECK": "off"}) is None


def test_domain_allocator_is_thread_safe_and_refuses_conflicts() -> None:
    alloc = DomainAllocator(count=16)
    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(alloc.acquire())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(16))
    with pytest.raises(BackendError, match="all 16 NPU memory domains are in use"):
        alloc.acquire()
    alloc.release(7)
    assert alloc.acquire() == 7
    alloc.release(3)
    with pytest.raises(BackendError, match="already used"):
        alloc.acquire(4)
    with pytest.raises(BackendError, match=re.escape("base_domain_id must be in [0, 15]")):
        alloc.acquire(16)
    assert alloc.acquire(3) == 3


@pytest.mark.parametrize(
    ("blob", "version"),
    [
        (b"\x00I rkllm: rkllm-runtime version: 1.2.3, rknpu driver\x00", "1.2.3"),
        (b"\x00rkllm-runtime version: %s, rknpu\x00\x001.3.0\x00zlib 1.2.13\x00", "1.3.0"),
        (b"\x00rkllm-runtime version: %s\x00\x001.2.1b1\x00", "1.2.1b1"),
        (b"\x001.2.2\x00\x001.2.13\x00", "1.2.2"),  # a supported one wins over another library's
        (b"\x001.4.1\x00\x001.2.13\x00", None),  # ambiguous
        (b"no version at all", None),
    ],
)
def test_version_detection(tmp_path: Path, blob: bytes, version: str | None) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(b"\x7fELF" + bytes(64) + blob)
    assert detect_version(path) == version


def test_layout_choice() -> None:
    assert choose_layout(None, "1.2.1", "lib").name == "1.2"
    assert choose_layout(None, "1.3.0", "lib").name == "1.3"
    assert choose_layout("1.2", None, "lib").name == "1.2"
    with pytest.raises(BackendError, match=r"set the model parameter layout=1\.2"):
        choose_layout(None, None, "lib")
    with pytest.raises(BackendError, match=r"1\.2\.1b1, which is not supported"):
        choose_layout(None, "1.2.1b1", "lib")
