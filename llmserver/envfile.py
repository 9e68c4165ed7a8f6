"""The settings of the service the command line manages: the same files the service reads.

The operator's commands (``vault``, ``models``, ``keys``, ``doctor``, ``migrate``...) run in a shell,
not under the service, so they would not see what the service is configured with: the secrets
``llmserver up`` generated, a unit's ``Environment=``, ``EnvironmentFile=`` and ``LoadCredential=``
(issue 25: a token stored under no key, a pull into the caller's home cache). Before such a command
runs, :func:`load_service_environment` fills every variable that is not set yet, first source wins:

1. ``--env-file PATH``, when given;
2. ``make run`` / ``llmserver up``: the data directory's ``secrets.env`` (next to the database);
3. an installed board: the proxy's unit (``/etc/systemd/system/llmserver-proxy.service``): its
   ``Environment=`` and ``EnvironmentFile=`` values (as systemd reads them: a file's values win over
   ``Environment=``), its ``LoadCredential=`` files (readable by the service's group, see
   ``systemd/install.sh``), and paths relative to its ``WorkingDirectory=`` made absolute.

Variables already set in the environment win, as they would on the command line. Which file gave
the encryption key is remembered (:func:`key_source`): ``vault rotate-key`` writes the new key there.
Environment files are read the way systemd reads these simple files: ``NAME=VALUE`` lines, ``#``
comments and blank lines skipped, one pair of surrounding quotes removed.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from proxy.settings import CREDENTIALS, DEFAULT_DATABASE_URL
from proxy.storage.database import resolve_path

INSTALLED_UNIT = Path("/etc/systemd/system/llmserver-proxy.service")
SECRETS_NAME = "secrets.env"  # what ``llmserver up`` writes into the data directory
_RELATIVE_PATHS = ("LLMSERVER_HF_CACHE", "LLMSERVER_MODEL_CONFIG_DIR", "LLMSERVER_TLS_CERT", "LLMSERVER_TLS_KEY")
_sources: dict[str, Path] = {}


def add_env_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help="read settings from this file first (e.g. /etc/llmserver/llmserver.env, as the units do)",
    )


def load_env_file(path: Path | None) -> None:
    """Set the variables of ``path`` that are not set yet; nothing when ``path`` is None."""
    if path is not None:
        _fill(read_env_file(path), path)


def secrets_file(env: Mapping[str, str] | None = None) -> Path:
    """Where ``llmserver up`` keeps the secrets it generated: the database's directory (``data/``)."""
    env = os.environ if env is None else env
    try:
        return resolve_path(env.get("LLMSERVER_DATABASE_URL") or DEFAULT_DATABASE_URL).parent / SECRETS_NAME
    except ValueError:  # a malformed URL is the settings' to report
        return resolve_path(DEFAULT_DATABASE_URL).parent / SECRETS_NAME


def load_service_environment(env_file: Path | None = None, unit: Path = INSTALLED_UNIT) -> None:
    """Fill the unset variables from the service's own files (see the module's docstring)."""
    load_env_file(env_file)
    secrets = secrets_file()
    if _readable(secrets):
        _fill(read_env_file(secrets), secrets)
    elif _readable(unit):
        _load_unit(unit)


def key_source() -> Path | None:
    """The file ``LLMSERVER_ENCRYPTION_KEY`` was read from by :func:`load_service_environment` (None:
    the environment itself)."""
    return _sources.get("LLMSERVER_ENCRYPTION_KEY")


def _load_unit(unit: Path) -> None:
    service = read_unit_service(unit)
    values: dict[str, str] = {}
    for line in service.get("Environment", []):
        values.update(_assignments(line))
    for line in service.get("EnvironmentFile", []):
        optional, path = line.startswith("-"), Path(line.lstrip("-"))
        if _readable(path):
            values.update(read_env_file(path))
        elif not optional and not path.exists():
            raise FileNotFoundError(f"{unit} names {path} (EnvironmentFile=), which does not exist")
    workdir = Path((service.get("WorkingDirectory") or ["/"])[-1])
    _fill(_absolute(values, workdir), unit)
    by_name = {name: var for var, name in CREDENTIALS.items()}
    for line in service.get("LoadCredential", []):
        name, _, file = line.partition(":")
        var, credential = by_name.get(name), Path(file)
        if var and _readable(credential):
            _fill({var: credential.read_text().strip()}, credential)


def _absolute(values: dict[str, str], workdir: Path) -> dict[str, str]:
    """Paths relative to the unit's working directory made absolute (the database's default too)."""
    values = dict(values)
    url = values.get("LLMSERVER_DATABASE_URL") or os.environ.get("LLMSERVER_DATABASE_URL") or DEFAULT_DATABASE_URL
    scheme, sep, rest = url.partition("://")
    if sep and not rest.startswith(("/", "~")):
        values["LLMSERVER_DATABASE_URL"] = f"{scheme}://{workdir / rest}"
    for name in _RELATIVE_PATHS:
        if values.get(name) and not values[name].startswith(("/", "~")):
            values[name] = str(workdir / values[name])
    return values


def read_unit_service(unit: Path) -> dict[str, list[str]]:
    """The ``[Service]`` settings of a unit file, each key with every value it was given."""
    service: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            service.setdefault(key.strip(), []).append(value.strip())
    return service


def _assignments(line: str) -> dict[str, str]:
    """``Environment=A=1 "B=two words"``: every assignment of one line."""
    pairs = {}
    for word in shlex.split(line):
        name, sep, value = word.partition("=")
        if sep:
            pairs[name] = value
    return pairs


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def _fill(values: Mapping[str, str], source: Path) -> None:
    for name, value in values.items():
        if not os.environ.get(name):  # an empty assignment means unset, as in the settings
            os.environ[name] = value
            _sources[name] = source


def _readable(path: Path) -> bool:
    """A file this user may read (the operator's directory may be closed to the service's user)."""
    try:
        return path.is_file() and os.access(path, os.R_OK)
    except OSError:
        return False
