"""The operator's commands (issue 13): every subcommand's --help, --version, migrate and doctor.

``doctor`` runs as a sysadmin runs it: a subprocess in the setup's working directory, once on a
healthy setup (a running daemon, a migrated database, private secrets) and once on a broken one
where it must name every problem.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmserver.cli import COMMANDS, build_parser, main
from tests.harness import ROOT, Daemon, clean_env


def llmserver(
    *args: str, env: dict[str, str], cwd: Path = ROOT, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "llmserver.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and subcommand the parser knows, e.g. ("keys", "create")."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _command_paths(sub, (*prefix, name))


def test_every_registered_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = list(_command_paths(build_parser()))
    assert {p[0] for p in paths} >= {"up", "proxy", "runtime", "keys", "migrate", "backup", "restore", "doctor"}
    assert len({p[0] for p in paths}) == len(COMMANDS)
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.startswith("usage: llmserver " + " ".join(path)), path
        assert "--help" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip().startswith("llmserver 0.")


def test_migrate_shows_then_applies(tmp_path: Path) -> None:
    env = clean_env(tmp_path) | {"LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/db/app.db"}
    env_file = tmp_path / "llmserver.env"  # as the units read it: comments, quotes
    env_file.write_text(f'# settings\nLLMSERVER_DATABASE_URL="sqlite:///{tmp_path}/elsewhere/app.db"\n')
    elsewhere = llmserver("migrate", "--env-file", str(env_file), env=clean_env(tmp_path))
    assert elsewhere.returncode == 0 and (tmp_path / "elsewhere" / "app.db").is_file(), elsewhere.stderr
    shown = llmserver("migrate", "--show", env=env)
    assert shown.returncode == 0 and "pending migration(s)" in shown.stdout and "20250101000000_init" in shown.stdout
    assert not (tmp_path / "db" / "app.db").exists(), "--show changes nothing"
    applied = llmserver("migrate", env=env)
    assert applied.returncode == 0 and "applied 20250101000000_init" in applied.stdout
    assert "up to date" in llmserver("migrate", "--show", env=env).stdout
    assert "nothing to apply" in llmserver("migrate", env=env).stdout


def _healthy_setup(tmp_path: Path, endpoint: str) -> dict[str, str]:
    env = clean_env(tmp_path) | {
        "LLMSERVER_DATABASE_URL": "sqlite://data/app.db",  # relative to the working directory, as under systemd
        "LLMSERVER_BIND_ADDRESS": "127.0.0.1:18443",
        "LLMSERVER_RUNTIME_ENDPOINT": endpoint,
    }
    assert llmserver("migrate", env=env, cwd=tmp_path).returncode == 0
    secrets = tmp_path / "data" / "secrets.env"
    fd = os.open(secrets, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, f"LLMSERVER_ENCRYPTION_KEY={'ab' * 32}\nLLMSERVER_SESSION_KEY={'cd' * 64}\n".encode())
    os.close(fd)
    return env


def test_doctor_says_a_healthy_setup_is_healthy(shared_daemon: Daemon, tmp_path: Path) -> None:
    env = _healthy_setup(tmp_path, shared_daemon.endpoint)
    env["LLMSERVER_ENCRYPTION_KEY"] = "ab" * 32
    out = llmserver("doctor", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "The setup is healthy" in out.stdout and "PROBLEM" not in out.stdout
    assert "smollm2 (llamacpp, ready)" in out.stdout and "is migrated" in out.stdout
    assert "ab" * 32 not in out.stdout + out.stderr


def test_doctor_names_each_problem_of_a_broken_setup(tmp_path: Path) -> None:
    env = _healthy_setup(tmp_path, f"ipc://{tmp_path}/nobody-here.sock")
    env["LLMSERVER_ENCRYPTION_KEY"] = "abcd"  # a key of the wrong length
    (tmp_path / "data" / "secrets.env").chmod(0o644)  # readable by others
    data = tmp_path / "data"
    data.chmod(0o555)  # the database's directory is not writable ...
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # ... not even for root, once root's override of file modes is dropped
        prefix = (shutil.which("setpriv") or "setpriv", "--bounding-set=-dac_override,-dac_read_search")
    try:
        out = llmserver("doctor", env=env, cwd=tmp_path, prefix=prefix)
    finally:
        data.chmod(0o755)
    text = out.stdout
    assert out.returncode == 1, text + out.stderr
    assert "LLMSERVER_ENCRYPTION_KEY must be 64 hexadecimal characters" in text and "openssl rand -hex 32" in text
    assert f"runtime daemon not reachable at ipc://{tmp_path}/nobody-here.sock" in text
    assert f"cannot write in {data}" in text
    assert f"{data}/secrets.env is readable by others (mode 0644)" in text and f"chmod 600 {data}/secrets.env" in text
    assert "4 problem(s) found." in text, text
    assert "abcd" not in text


def test_doctor_finds_pending_migrations(tmp_path: Path) -> None:
    env = clean_env(tmp_path) | {"LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/app.db"}
    assert llmserver("migrate", env=env).returncode == 0
    conn = sqlite3.connect(tmp_path / "app.db")
    with conn:
        conn.execute("DELETE FROM _yoyo_migration WHERE migration_id = '20250101000200_client_request_id'")
    conn.close()
    out = llmserver("doctor", env=env, cwd=tmp_path)
    assert out.returncode == 1 and "1 migration(s) pending" in out.stdout and "llmserver migrate" in out.stdout
