"""Issue 25: the README's ``llmserver`` commands for a systemd board, run against the installed layout.

``make install-systemd`` goes into a scratch root (``DESTDIR``: the user, the directories, the credentials,
the settings file and the units, as on a board). Each README line then runs in a private mount namespace
where that scratch root's ``/etc/llmserver``, units, ``/var/lib/llmserver`` and user are the machine's own,
``/opt/llmserver/.venv`` is this checkout's environment, and ``sudo -u llmserver`` is ``runuser -u
llmserver --`` (this machine has no sudo): the command runs as the service's user, from a directory of
its own, with nothing in its environment, as an operator types it. The Hub is the stand-in
(``HF_ENDPOINT`` in the settings file, as for a mirror). Without the fix the CLI found no encryption key
(the credentials were root's only and the unit's were not read), and a pull went to the caller's home.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT
from tests.lifecycle.conftest import HUB_TOKEN, hub  # noqa: F401  (the Hub stand-in fixture)
from tests.lifecycle.hub import Hub

README_BLOCK = re.compile(r"`tests/test_systemd_board.py` runs these lines.*?```sh\n(.*?)```", re.S)
SUDO = "sudo -u llmserver "


def _readme_lines() -> list[str]:
    match = README_BLOCK.search((ROOT / "README.md").read_text())
    assert match, "the README's board commands are gone"
    return [line for line in match.group(1).splitlines() if line.startswith(SUDO)]


def _tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("installing into a scratch root and switching to its user needs root")
    for tool in ("unshare", "runuser", "systemd-sysusers", "systemd-tmpfiles"):
        assert shutil.which(tool), f"{tool} is missing (make setup installs systemd's tools)"


class Board:
    """The scratch root's files seen at their real paths, in a private mount namespace per command."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root, self.work = root, work
        (work / "etc-top").mkdir(parents=True)
        (work / "etc-top" / "passwd").write_text(_merged("/etc/passwd", root / "etc/passwd"))
        (work / "etc-top" / "group").write_text(_merged("/etc/group", root / "etc/group"))
        (work / "opt" / "llmserver").mkdir(parents=True)
        (work / "opt" / "llmserver" / ".venv").symlink_to(Path(sys.executable).parent.parent)
        (work / "home").mkdir(mode=0o777)  # where the operator stands: nobody's settings
        (work / "home").chmod(0o777)

    def setup(self) -> str:
        python_home = Path(os.path.realpath(sys.executable)).parents[3]  # e.g. /root/.pyenv
        # /etc: the accounts, over the scratch root's files (settings, credentials, units), over the machine's.
        layers = f"{self.work / 'etc-top'}:{self.root / 'etc'}:/etc"
        lines = [
            "set -e",
            "mount --make-rprivate /",
            f"mount -t overlay overlay -o lowerdir={layers} /etc",
            "mount -t tmpfs -o mode=0755 tmpfs /var/lib",
            "mkdir /var/lib/llmserver",
            f"mount --bind {self.root / 'var/lib/llmserver'} /var/lib/llmserver",
            f"mount --bind {self.work / 'opt'} /opt",
        ]
        if python_home.is_relative_to("/root"):  # the interpreter under root's 0700 home: let the user reach it
            hold = self.work / "python-home"
            hold.mkdir(exist_ok=True)
            lines += [
                f"mount --bind {python_home} {hold}",
                "mount -t tmpfs -o mode=0755 tmpfs /root",
                f"mkdir -p {python_home}",
                f"mount --bind {hold} {python_home}",
            ]
        return "\n".join(lines)

    def run(self, line: str) -> subprocess.CompletedProcess[str]:
        """One README line, ``sudo -u llmserver`` as ``runuser``, in the operator's directory."""
        command = "runuser -u llmserver -- " + line[len(SUDO) :]
        script = f"{self.setup()}\ncd {shlex.quote(str(self.work / 'home'))}\n{command}\n"
        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT)}  # this checkout
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=300
        )


def _merged(real: str, scratch: Path) -> str:
    """The machine's accounts plus the scratch root's llmserver entries (and groups it added)."""
    mine = Path(real).read_text().splitlines()
    names = {line.split(":")[0] for line in mine}
    added = [line for line in scratch.read_text().splitlines() if line.split(":")[0] not in names]
    return "\n".join(mine + added) + "\n"


@pytest.mark.timeout(600)
def test_the_readmes_board_commands_work_as_the_service_user_on_the_installed_layout(hub: Hub, tmp_path: Path) -> None:  # noqa: F811
    _tools()
    root = tmp_path / "root"
    env = {**os.environ, "DESTDIR": str(root)}
    installed = subprocess.run(
        ["sh", str(ROOT / "systemd/install.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert installed.returncode == 0, installed.stderr
    with (root / "etc/llmserver/llmserver.env").open("a") as settings:
        settings.write(f"HF_ENDPOINT={hub.endpoint}\n")  # a mirror: here the Hub stand-in
    board = Board(root, tmp_path / "work")
    (board.work / "home" / "hf-token.txt").write_text(HUB_TOKEN + "\n")
    state = root / "var/lib/llmserver"
    lines = _readme_lines()
    assert [line.split()[4:6] for line in lines][:3] == [["doctor"], ["vault", "add"], ["models", "run"]]

    outputs = {}
    for line in lines:
        done = board.run(line)
        outputs[line.split()[4]] = outputs.get(line.split()[4], "") + done.stdout
        if line.split()[4] != "doctor":  # doctor also finds no runtime here (nothing runs): its findings matter
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        assert HUB_TOKEN not in done.stdout + done.stderr

    doctor = outputs["doctor"]
    assert "Hugging Face tokens can be stored" in doctor and "cannot be stored" not in doctor, doctor
    assert "PROBLEM  secrets" not in doctor, doctor  # (no database yet: the proxy has not started)
    # The same database, key and cache as the services: under /var/lib/llmserver, owned by the user.
    database = state / "data" / "app.db"
    accounts = (root / "etc/passwd").read_text().splitlines()
    uid = next(int(entry.split(":")[2]) for entry in accounts if entry.startswith("llmserver:"))
    assert database.stat().st_uid == uid
    blobs = list((state / "hf-cache").rglob("blobs/*"))
    assert blobs and all(b.stat().st_uid == uid for b in blobs), "the pull did not land in LLMSERVER_HF_CACHE"
    assert not (state / ".cache").exists() and not (board.work / "home" / ".cache").exists()
    assert (state / "data" / "models" / "smollm2-135m-instruct.q4_1.json").is_file()
    assert "smollm2-135m-instruct.q4_1" in outputs["models"] and "done" in outputs["models"]
    # rotate-key: the service's user cannot write the credential: the key is printed, with where it goes.
    assert "/etc/llmserver/credentials/encryption-key" in outputs["vault"]
    new_key = outputs["vault"].strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", new_key)
    assert (root / "etc/llmserver/credentials/encryption-key").read_text().strip() != new_key
