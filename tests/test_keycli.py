"""``llmserver keys create|list|revoke`` against a real database file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmserver.commands.keys import main
from proxy.auth.apikey import parse_api_key

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "db" / "app.db"
    monkeypatch.setenv("LLMSERVER_DATABASE_URL", f"sqlite://{path}")
    monkeypatch.setenv("LLMSERVER_ARGON2_PROFILE", "test")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_the_key_once_on_its_last_line(capsys: pytest.CaptureFixture[str], database: Path) -> None:
    code, out, err = run(
        capsys, "keys", "create", "--name", "ci", "--token-limit", "1000", "--models", "a, b", "--rpm", "5",
        "--tpm", "500", "--expires", "2999-12-31",
    )  # fmt: skip
    assert code == 0 and err == ""
    full_key = out.splitlines()[-1]
    assert parse_api_key(full_key) is not None
    assert database.exists()
    code, listing, _ = run(capsys, "keys", "list")
    assert code == 0
    assert full_key not in listing and full_key.split("_")[2] not in listing
    header, row = listing.splitlines()
    assert header.split() == ["ID", "NAME", "LAST4", "LIMIT", "USED", "REQUESTS", "STATE", "EXPIRES"]
    assert row.split()[:7] == ["1", "ci", full_key[-4:], "1000", "0", "0", "active"]
    assert "3000-01-01 00:00 UTC" in row  # a date means the end of that day


def test_revoke_by_id_or_public_id(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("one", "two"):
        run(capsys, "keys", "create", "--name", name)
    assert run(capsys, "keys", "revoke", "1")[0] == 0
    _, out, _ = run(capsys, "keys", "create", "--name", "three")
    public_id = out.splitlines()[-1].split("_")[1]
    code, out, _ = run(capsys, "keys", "revoke", public_id)
    assert code == 0 and "revoked key 3" in out
    states = [line.split()[6] for line in run(capsys, "keys", "list")[1].splitlines()[1:]]
    assert states == ["revoked", "active", "revoked"]


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "revoke", "42"),
        ("keys", "revoke", "nonexistent"),
    ],
)
def test_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("llmserver keys: error:") and "Traceback" not in err


def test_a_bad_setting_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSERVER_DATABASE_URL", "mysql://nope")
    code, _, err = run(capsys, "keys", "list")
    assert code == 2 and err.count("\n") == 1 and "LLMSERVER_DATABASE_URL" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("keys", "create"),
        ("keys", "create", "--name", "x", "--token-limit", "-1"),
        ("keys", "create", "--name", "x", "--expires", "2001-01-01"),
        ("keys", "create", "--name", "x", "--expires", "tomorrow"),
        ("keys", "create", "--name", "x", "--rpm", "0"),
    ],
)
def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(list(argv))
    assert caught.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_python_dash_m_entry_point(database: Path) -> None:
    env = {**os.environ, "LLMSERVER_DATABASE_URL": f"sqlite://{database}", "LLMSERVER_ARGON2_PROFILE": "test"}
    result = subprocess.run(
        [sys.executable, "-m", "llmserver.commands.keys", "keys", "create", "--name", "m"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert parse_api_key(result.stdout.splitlines()[-1]) is not None
