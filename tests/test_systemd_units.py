"""The systemd units a sysadmin installs, and the documentation of every setting."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ROOT / "systemd" / name)
    return parser


def test_units_start_the_two_services_hardened() -> None:
    runtime, proxy = unit("llmserver-runtime.service"), unit("llmserver-proxy.service")
    assert runtime["Service"]["ExecStart"].endswith("llmserver runtime")
    assert proxy["Service"]["ExecStart"].endswith("llmserver proxy")
    assert "llmserver-runtime.service" in proxy["Unit"]["After"]
    assert runtime["Service"]["RuntimeDirectory"] == "llmserver"
    assert "LoadCredential" in proxy["Service"]
    for u in (runtime, proxy):
        service = u["Service"]
        assert service["User"] == "llmserver" and service["NoNewPrivileges"] == "yes"
        assert service["ProtectSystem"] == "strict" and service["KillSignal"] == "SIGTERM"


def test_credentials_named_in_the_unit_are_the_ones_the_proxy_reads() -> None:
    from proxy.settings import _CREDENTIALS

    text = (ROOT / "systemd" / "llmserver-proxy.service").read_text()
    for name in _CREDENTIALS.values():
        assert f"LoadCredential={name}:" in text


def test_every_runtime_setting_is_documented() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / "config" / "llmserver.env.example").read_text()
    sources = [*ROOT.joinpath("runtime").rglob("*.py")]
    used = {v for path in sources for v in re.findall(r"LLMSERVER_[A-Z0-9_]+", path.read_text())}
    assert used, "no settings found"
    missing = sorted(v for v in used if f"`{v}`" not in docs)
    assert not missing, f"undocumented settings: {missing}"
    not_in_example = sorted(v for v in used if v not in example)
    assert not not_in_example, f"missing from config/llmserver.env.example: {not_in_example}"
