"""What ``llmserver doctor`` checks, one function per area, each returning :class:`Finding` s.

Every finding that is a problem says how to fix it. The checks read and probe but change nothing
(a writability probe creates and removes one temporary file). Areas: the configuration (every
variable parses; one bad variable does not hide the others: it is reported and left out, and the
rest is read again), secrets and the modes of the files holding them, the database (directory
writable, file readable, integrity, migrations), the runtime (reachable, its models), the NPU
(present, driver version), free disk for the data directory and the Hugging Face cache.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llmserver.envfile import SECRETS_NAME, secrets_file
from proxy.errors import ProxyError, SettingsError
from proxy.settings import Settings, load_settings
from proxy.storage.hf_tokens import vault_key_id
from proxy.storage.migrate import BUSY_TIMEOUT_MS, applied_migrations, known_migrations
from proxy.storage.servinglock import is_served
from proxy.storage.vault import Vault, parse_hex_key
from runtime.api.client import RuntimeClient
from runtime.api.errors import ModelSpecError, RuntimeClientError
from runtime.api.models import parse_model_spec
from runtime.api.state import FAILED, ModelState
from runtime.backends.rkllm.device import MIN_DRIVER, find_npu

OK, NOTE, PROBLEM = "ok", "note", "PROBLEM"
SECRET_HEX = {"LLMSERVER_ENCRYPTION_KEY": 32, "LLMSERVER_SESSION_KEY": 64}
CREDENTIALS_DIR = Path("/etc/llmserver/credentials")  # what the units' LoadCredential= reads
MIN_FREE_DATA = 1 << 30  # 1 GiB for the database, its WAL and backups
MIN_FREE_HF_CACHE = 4 << 30  # 4 GiB: one small quantised model
_VAR = re.compile(r"LLMSERVER_[A-Z0-9_]+")
# Left out together when an error names no single variable (a credential file, the TLS pair).
_LEFT_OUT_WHOLE = ("CREDENTIALS_DIRECTORY", "LLMSERVER_TLS_CERT", "LLMSERVER_TLS_KEY")


@dataclass(frozen=True)
class Finding:
    level: str  # OK, NOTE or PROBLEM
    area: str
    message: str
    fix: str = ""


def ok(area: str, message: str) -> Finding:
    return Finding(OK, area, message)


def note(area: str, message: str) -> Finding:
    return Finding(NOTE, area, message)


def problem(area: str, message: str, fix: str) -> Finding:
    return Finding(PROBLEM, area, message, fix)


# -- configuration ------------------------------------------------------------------------------


def check_configuration(env: Mapping[str, str]) -> tuple[Settings, list[Finding]]:
    """The settings with every bad variable left out (each one reported), and the findings."""
    env = dict(env)
    findings: list[Finding] = []
    for _ in range(len(env) + 1):
        try:
            settings = load_settings(env)
            break
        except SettingsError as exc:
            names = [n for n in _VAR.findall(str(exc)) if n in env]
            findings.append(problem("configuration", str(exc), _fix_for(names)))
            if not names:  # a bad credential file, or a pair (TLS): read the rest without them
                env = {k: v for k, v in env.items() if k not in _LEFT_OUT_WHOLE}
            for name in names:
                env.pop(name, None)
    else:  # pragma: no cover - every round removes a variable
        settings = Settings()
    try:
        settings.check_bind_security()
    except ProxyError as exc:
        findings.append(problem("configuration", str(exc), "see docs/configuration.md, LLMSERVER_BIND_ADDRESS"))
    findings += _runtime_models(env)
    if not findings:
        findings.append(ok("configuration", f"every setting parses (database {settings.database_path})"))
    return settings, findings


def _runtime_models(env: Mapping[str, str]) -> list[Finding]:
    specs = [s.strip() for s in env.get("LLMSERVER_RUNTIME_MODELS", "").split(";") if s.strip()]
    found = []
    for spec in specs:
        try:
            parse_model_spec(spec)
        except ModelSpecError as exc:
            found.append(problem("configuration", f"LLMSERVER_RUNTIME_MODELS: {exc}", "NAME=BACKEND:PATH[,key=value]"))
    return found


def _fix_for(names: list[str]) -> str:
    secret = [n for n in names if n in SECRET_HEX]
    if secret == ["LLMSERVER_ENCRYPTION_KEY"]:  # a new key would lock the stored tokens out (issue 25)
        return (
            "set LLMSERVER_ENCRYPTION_KEY to the key the Hugging Face tokens were stored with (64 hex characters); "
            "a new one (openssl rand -hex 32) only if no token is stored"
        )
    if secret:
        n = SECRET_HEX[secret[0]]
        return f"set {secret[0]} to {2 * n} hex characters: openssl rand -hex {n}"
    return f"correct {', '.join(names) or 'the setting'} (docs/configuration.md)"


# -- secrets --------------------------------------------------------------------------------------


def check_secrets(env: Mapping[str, str], settings: Settings) -> list[Finding]:
    """Files holding secrets must not be readable by anyone but their owner; their values must parse."""
    found: list[Finding] = []
    files = _secret_files(env)
    for path in files:
        # A credential file may be read by the service's group (issue 25: the CLI run as that user).
        found += _private(path, group_ok=path.name != SECRETS_NAME)
        if path.name == SECRETS_NAME:
            found += _secrets_file_values(path)
    if settings.tls_key is not None:
        found += _private(settings.tls_key, group_ok=True)
    if settings.encryption_key is None:
        found.append(note("secrets", "LLMSERVER_ENCRYPTION_KEY is not set: Hugging Face tokens cannot be stored"))
    if not any(f.level == PROBLEM for f in found):
        found.append(ok("secrets", f"{len(files)} secret file(s) checked: private, values parse"))
    return found


def _secret_files(env: Mapping[str, str]) -> list[Path]:
    up_secrets = secrets_file(env)
    files = [up_secrets] if up_secrets.is_file() else []
    for directory in (env.get("CREDENTIALS_DIRECTORY"), str(CREDENTIALS_DIR)):
        if directory and os.access(directory, os.R_OK | os.X_OK):
            files += sorted(p for p in Path(directory).iterdir() if p.is_file())
    return files


def check_vault(settings: Settings) -> list[Finding]:
    """The encryption key against the one the stored Hugging Face tokens use (issue 25)."""
    path, current = settings.database_path, None
    try:
        if path.is_file():
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            try:
                current = vault_key_id(conn)
            finally:
                conn.close()
    except (sqlite3.Error, OSError):
        return []  # the database check says why
    if settings.encryption_key is None:
        return [] if current is None else [_no_key(current)]
    key_id = Vault(settings.encryption_key).key_id
    if current not in (None, key_id):
        fix = "set the key `llmserver vault rotate-key` printed or wrote last; a new key would lock the tokens out"
        return [
            problem("secrets", f"LLMSERVER_ENCRYPTION_KEY is key id {key_id}; the stored tokens use {current}", fix)
        ]
    return [ok("secrets", f"Hugging Face tokens can be stored and read (key id {key_id})")]


def _no_key(current: str) -> Finding:
    return problem(
        "secrets",
        f"LLMSERVER_ENCRYPTION_KEY is not set, and stored Hugging Face tokens use key id {current}",
        "run doctor where the service's settings are (sudo -u llmserver llmserver doctor on a systemd install); "
        "never generate a new key: it would lock the tokens out",
    )


def _private(path: Path, group_ok: bool = False) -> list[Finding]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return [problem("secrets", f"cannot read {path}: {exc.strerror}", f"check that {path} exists")]
    exposed = mode & (0o007 if group_ok else 0o077)
    if exposed:
        want = "640" if group_ok else "600"
        who = "others" if mode & 0o007 else "its group"
        return [problem("secrets", f"{path} is readable by {who} (mode {mode:04o})", f"chmod {want} {path}")]
    return []


def _secrets_file_values(path: Path) -> list[Finding]:
    found = []
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() in SECRET_HEX:
            try:
                parse_hex_key(value.strip(), SECRET_HEX[name.strip()])
            except ValueError as exc:
                found.append(problem("secrets", f"{name.strip()} in {path} {exc}", _fix_for([name.strip()])))
    return found


# -- database -------------------------------------------------------------------------------------


def check_database(settings: Settings) -> list[Finding]:
    path = settings.database_path
    directory = _existing_parent(path.parent)
    if not _writable(directory):
        return [
            problem(
                "database",
                f"cannot write in {directory} (the database's directory, or where it would be created)",
                f"make {directory} writable by the user the proxy runs as (chown/chmod), or set LLMSERVER_DATABASE_URL",
            )
        ]
    if not path.exists():
        return [problem("database", f"{path} does not exist yet", "run: llmserver migrate (the proxy also does it)")]
    return _database_file(path)


def _database_file(path: Path) -> list[Finding]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            applied = applied_migrations(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [problem("database", f"{path} cannot be read: {exc}", "check the file, or restore a backup")]
    if result != "ok":
        return [problem("database", f"{path} fails SQLite's check: {result}", "llmserver restore a backup")]
    found = []
    pending = [m for m in known_migrations() if m not in applied]
    if pending:
        found.append(problem("database", f"{len(pending)} migration(s) pending", "run: llmserver migrate"))
    if not os.access(path, os.W_OK):
        found.append(problem("database", f"{path} is not writable", f"chown the file to the proxy's user: {path}"))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o004:
        found.append(
            note("database", f"{path} is readable by every user (mode {mode:04o}); chmod 640 keeps it private")
        )
    if is_served(path):
        found.append(note("database", "a running proxy serves it (llmserver restore would refuse now)"))
    if not any(f.level == PROBLEM for f in found):
        found.insert(0, ok("database", f"{path} answers, passes its check and is migrated"))
    return found


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(directory: Path) -> bool:
    """Whether a file can be created here (a real probe: root passes os.access checks regardless)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-"):
            return True
    except OSError:
        return False


# -- runtime and NPU ----------------------------------------------------------------------------


def check_runtime(settings: Settings) -> tuple[list[ModelState] | None, list[Finding]]:
    """The runtime's models (None when unreachable) and the findings."""
    endpoint = settings.runtime_endpoint
    try:
        models = asyncio.run(_models(endpoint))
    except (RuntimeClientError, asyncio.TimeoutError, OSError) as exc:
        fix = "start it (systemctl start llmserver-runtime, or llmserver runtime) or correct LLMSERVER_RUNTIME_ENDPOINT"
        return None, [problem("runtime", str(exc) or f"no answer from {endpoint} in time", fix)]
    found = []
    for m in models:
        if m.state == FAILED:
            found.append(problem("runtime", f"model {m.name} failed to load: {m.error}", "see its log"))
    names = ", ".join(f"{m.name} ({m.backend}, {m.state})" for m in models) or "no models"
    if not models:
        found.append(note("runtime", "the runtime serves no models (set LLMSERVER_RUNTIME_MODELS)"))
    found.append(ok("runtime", f"answers at {endpoint}: {names}"))
    return models, found


async def _models(endpoint: str) -> list[ModelState]:
    async with RuntimeClient(endpoint, connect_wait=1.0) as client:
        await asyncio.wait_for(client.ping(timeout=2.0), 3.0)
        return await asyncio.wait_for(client.models(), 3.0)


def check_npu(env: Mapping[str, str], models: list[ModelState] | None, root: Path = Path("/")) -> list[Finding]:
    wanted = "=rkllm:" in env.get("LLMSERVER_RUNTIME_MODELS", "") or any(m.backend == "rkllm" for m in models or [])
    device = find_npu(root)
    if device is None:
        if wanted:
            return [
                problem("npu", "an rkllm model is configured but there is no Rockchip NPU", "docs/rkllm.md: the driver")
            ]
        return [note("npu", "no Rockchip NPU here; llama.cpp models run on the CPU")]
    if device.driver_version is None:
        return [note("npu", f"NPU at {device.node}; driver version not readable (run doctor as root to see it)")]
    version = tuple(int(p) for p in device.driver_version.split("."))
    if version < MIN_DRIVER:
        least = ".".join(map(str, MIN_DRIVER))
        return [problem("npu", f"rknpu driver {device.driver_version} at {device.node}", f"upgrade it to {least}+")]
    return [ok("npu", f"NPU at {device.node}, rknpu driver {device.driver_version}")]


# -- disk ----------------------------------------------------------------------------------------


def check_disk(settings: Settings, env: Mapping[str, str]) -> list[Finding]:
    hf = settings.hf_cache or Path(env.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"
    found = []
    for label, path, need in (
        ("data directory", settings.database_path.parent, MIN_FREE_DATA),
        ("HF cache", hf, MIN_FREE_HF_CACHE),
    ):
        where = _existing_parent(path)
        free = shutil.disk_usage(where).free
        text = f"{label} {path}: {free / (1 << 30):.1f} GiB free"
        if free < need:
            found.append(problem("disk", text, f"free at least {need >> 30} GiB on the filesystem of {where}"))
        else:
            found.append(ok("disk", text))
    return found
