"""The systemd units, sysusers/tmpfiles snippets and example settings a sysadmin installs.

The units are read with configparser, and checked with systemd's own tools: ``systemd-analyze
verify`` (any warning fails), ``systemd-analyze security --offline=yes`` (each unit 2.5 or better)
and applying the sysusers/tmpfiles snippets to a scratch root. ``make setup`` installs systemd's
tools where they are missing (Debian: ``apt-get install systemd``); a machine without them fails
these tests rather than skipping them (issue 13).
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

Unit = configparser.RawConfigParser

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
RUNTIME_UNIT = "llmserver-runtime.service"
PROXY_UNIT = "llmserver-proxy.service"
UNITS = (RUNTIME_UNIT, PROXY_UNIT)
BINARY = "/opt/llmserver/.venv/bin/llmserver"
ENDPOINT = "LLMSERVER_RUNTIME_ENDPOINT=ipc:///run/llmserver/runtime.sock"
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
}


class _RepeatedKeys(dict):  # type: ignore[type-arg]
    """configparser's option dict: a key given twice (DeviceAllow=, Environment=) keeps every value."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self:
            super().__getitem__(key).extend(value)
        else:
            super().__setitem__(key, value)


def unit(name: str) -> Unit:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, dict_type=_RepeatedKeys)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SYSTEMD / name)
    return parser


def values(u: Unit, section: str, key: str) -> list[str]:
    return u[section].get(key, "").splitlines()


@pytest.fixture(scope="module")
def runtime() -> Unit:
    return unit(RUNTIME_UNIT)


@pytest.fixture(scope="module")
def proxy() -> Unit:
    return unit(PROXY_UNIT)


def test_units_start_the_runtime_and_the_proxy(runtime: Unit, proxy: Unit) -> None:
    assert runtime["Service"]["ExecStart"] == f"{BINARY} runtime"
    assert proxy["Service"]["ExecStart"] == f"{BINARY} proxy"
    for u in (runtime, proxy):
        service = u["Service"]
        assert service["Type"] == "notify" and service["User"] == "llmserver"
        assert service["NotifyAccess"] == "main" and int(service["WatchdogSec"]) > 0
    # The proxy's connection bound derives from its open-file limit; the daemon holds a few sockets and files.
    assert int(proxy["Service"]["LimitNOFILE"]) >= 65536
    assert int(runtime["Service"]["LimitNOFILE"]) >= 1024
    for u in (runtime, proxy):
        service = u["Service"]
        assert service["Restart"] == "on-failure"
        assert service["KillSignal"] == "SIGTERM" and service["TimeoutStopSec"] == "30"
        assert "-/etc/llmserver/llmserver.env" in values(u, "Service", "EnvironmentFile")
        assert u["Install"]["WantedBy"] == "multi-user.target"


def test_the_proxy_starts_after_the_runtime_and_finds_its_socket(runtime: Unit, proxy: Unit) -> None:
    assert RUNTIME_UNIT in proxy["Unit"]["After"].split()
    assert RUNTIME_UNIT in proxy["Unit"]["Requires"].split()
    assert runtime["Service"]["RuntimeDirectory"] == "llmserver"
    # The proxy cannot write /run/llmserver, so the endpoint must be given, and be the same.
    for u in (runtime, proxy):
        assert ENDPOINT in values(u, "Service", "Environment")


def test_the_proxy_keeps_its_database_in_the_state_directory(proxy: Unit) -> None:
    service = proxy["Service"]
    assert service["StateDirectory"] == "llmserver"
    assert service["WorkingDirectory"] == "/var/lib/llmserver"  # sqlite://data/app.db is relative
    assert "/var/lib/llmserver" in service["ReadWritePaths"].split()


def test_secrets_are_systemd_credentials_the_proxy_reads(proxy: Unit) -> None:
    from proxy.settings import CREDENTIALS

    loaded = values(proxy, "Service", "LoadCredential")
    assert sorted(loaded) == sorted(f"{name}:/etc/llmserver/credentials/{name}" for name in CREDENTIALS.values())
    text = (SYSTEMD / PROXY_UNIT).read_text()
    assert "CREDENTIALS_DIRECTORY" in text, "the unit says where the proxy finds them"
    assert not re.search(r"^Environment=.*_KEY=", text, re.M), "no secret in the unit"


@pytest.mark.parametrize("name", UNITS)
def test_units_are_hardened(name: str) -> None:
    service = unit(name)["Service"]
    missing = {k: v for k, v in HARDENING.items() if service.get(k) != v}
    assert not missing, f"{name}: hardening missing or different: {missing}"
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_the_runtime_may_use_the_npu_and_nothing_else(runtime: Unit) -> None:
    service = runtime["Service"]
    assert service["DevicePolicy"] == "closed" and "PrivateDevices" not in service
    assert set(values(runtime, "Service", "DeviceAllow")) == {"/dev/rknpu rw", "/dev/dri/renderD129 rw"}
    assert set(service["SupplementaryGroups"].split()) == {"render", "video"}
    assert service["ReadWritePaths"].split() == ["/var/lib/llmserver"]


def test_sysusers_and_tmpfiles_snippets() -> None:
    sysusers = _lines(SYSTEMD / "llmserver.sysusers.conf")
    assert 'u llmserver - "llmserver daemon" /var/lib/llmserver' in sysusers
    tmpfiles = [line.split() for line in _lines(SYSTEMD / "llmserver.tmpfiles.conf")]
    assert ["d", "/run/llmserver", "0750", "llmserver", "llmserver", "-"] in tmpfiles
    assert ["d", "/var/lib/llmserver", "0750", "llmserver", "llmserver", "-"] in tmpfiles


def test_every_setting_is_in_the_example_environment_file() -> None:
    example = (ROOT / "config" / "llmserver.env.example").read_text()
    docs = (ROOT / "docs" / "configuration.md").read_text()
    used = _settings_read_by_the_code()
    assert used, "no settings found"
    assert not sorted(v for v in used if f"{v}=" not in example), "missing from config/llmserver.env.example"
    runtime_vars = {v for v in used if _read_by(v, "runtime")}
    assert not sorted(v for v in runtime_vars if f"`{v}`" not in docs), "undocumented in docs/configuration.md"
    assert not re.search(r"^\s*LLMSERVER_\w+=", example, re.M), "every line of the example is commented out"


def test_example_model_configs_load_as_model_configs() -> None:
    import json

    from runtime.api.models import model_config_from_wire
    from runtime.backends.llamacpp import _check_params
    from runtime.backends.rkllm.settings import parse_settings

    models = json.loads((ROOT / "config" / "models.example.json").read_text())["models"]
    configs = {c.backend: c for c in map(model_config_from_wire, models)}
    assert set(configs) == {"llamacpp", "rkllm"}
    _check_params(configs["llamacpp"].params)
    rkllm = parse_settings(configs["rkllm"].params)
    assert rkllm.target_platform == "rk3588" and rkllm.template is not None


# -- with systemd's own tools, when the machine has them ------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed here: run make setup (Debian: apt-get install systemd)"
    return path


def _units_in(tmp_path: Path) -> list[Path]:
    """Copies of the units whose ExecStart binary exists here (verify checks that it does)."""
    executable = Path(sys.executable).with_name("llmserver")
    target = str(executable) if executable.exists() else str(shutil.which("true"))
    copies = []
    for name in UNITS:
        copy = tmp_path / name
        copy.write_text((SYSTEMD / name).read_text().replace(BINARY, target))
        copies.append(copy)
    return copies


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    out = subprocess.run(
        [analyze, "verify", *map(str, _units_in(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), out.stderr


@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_security_rates_the_units_ok(tmp_path: Path, name: str) -> None:
    analyze = _tool("systemd-analyze")
    path = next(p for p in _units_in(tmp_path) if p.name == name)
    # Exposure 0-10 (the threshold is x10): issue 13 asks for 2.5 or better; today 2.1 and 1.8.
    out = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=25", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert score is not None and float(score.group(1)) <= 2.5, out.stdout[-500:]


def test_sysusers_and_tmpfiles_apply_to_a_scratch_root(tmp_path: Path) -> None:
    sysusers, tmpfiles = _tool("systemd-sysusers"), _tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("applying tmpfiles lines owned by llmserver needs root (chown)")
    for tool, folder in (("sysusers", "sysusers.d"), ("tmpfiles", "tmpfiles.d")):
        (tmp_path / "etc" / folder).mkdir(parents=True)
        shutil.copy(SYSTEMD / f"llmserver.{tool}.conf", tmp_path / "etc" / folder / "llmserver.conf")
    subprocess.run([sysusers, f"--root={tmp_path}"], check=True, capture_output=True, timeout=60)
    subprocess.run([tmpfiles, "--create", f"--root={tmp_path}"], check=True, capture_output=True, timeout=60)
    passwd = (tmp_path / "etc" / "passwd").read_text()
    entry = next(line.split(":") for line in passwd.splitlines() if line.startswith("llmserver:"))
    assert entry[5] == "/var/lib/llmserver"
    for directory in ("run/llmserver", "var/lib/llmserver"):
        st = (tmp_path / directory).stat()
        assert st.st_uid == int(entry[2]) and st.st_mode & 0o777 == 0o750
    credentials = (tmp_path / "etc/llmserver/credentials").stat()  # issue 25: the service's group reads them
    assert credentials.st_mode & 0o777 == 0o750 and (credentials.st_uid, credentials.st_gid) == (0, int(entry[3]))


# -- helpers ------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


_PACKAGES = ("runtime", "proxy", "admin_ui", "llmserver")


def _settings_read_by_the_code() -> set[str]:
    return {v for package in _PACKAGES for v in _names_in(ROOT / package)}


def _read_by(var: str, package: str) -> bool:
    return var in _names_in(ROOT / package)


def _names_in(folder: Path) -> set[str]:
    return {v for path in folder.rglob("*.py") for v in re.findall(r"LLMSERVER_[A-Z0-9_]+", path.read_text())}


def test_the_install_script_puts_everything_in_place(tmp_path: Path) -> None:
    """``make install-systemd`` into a scratch root (DESTDIR: files only, no apt, pip or systemctl)."""
    if os.geteuid() != 0:
        pytest.skip("the install script runs as root (it chowns to the llmserver user)")
    _tool("systemd-sysusers")
    env = {**os.environ, "DESTDIR": str(tmp_path), "PREFIX": "/srv/llm"}
    for _ in range(2):  # a second run keeps the secrets and the settings
        out = subprocess.run(["sh", str(SYSTEMD / "install.sh")], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        if _ == 0:
            first_key = (tmp_path / "etc/llmserver/credentials/encryption-key").read_text()
    credentials = tmp_path / "etc/llmserver/credentials"
    assert (credentials / "encryption-key").read_text() == first_key
    for name, hex_chars in (("encryption-key", 64), ("session-key", 128)):
        assert len((credentials / name).read_text().strip()) == hex_chars
    gid = next(
        int(line.split(":")[2])
        for line in (tmp_path / "etc/group").read_text().splitlines()
        if line.startswith("llmserver:")
    )
    for name in ("encryption-key", "session-key"):  # issue 25: root writes, the service's group reads
        st = (credentials / name).stat()
        assert st.st_mode & 0o777 == 0o640 and (st.st_uid, st.st_gid) == (0, gid)
    assert credentials.stat().st_mode & 0o777 == 0o750 and credentials.stat().st_gid == gid
    settings = tmp_path / "etc/llmserver/llmserver.env"
    assert settings.stat().st_mode & 0o777 == 0o640
    assert settings.stat().st_gid == gid
    for name in UNITS:
        installed = (tmp_path / "etc/systemd/system" / name).read_text()
        assert installed == (SYSTEMD / name).read_text().replace(BINARY, "/srv/llm/.venv/bin/llmserver")
    assert (tmp_path / "var/lib/llmserver").stat().st_mode & 0o777 == 0o750
