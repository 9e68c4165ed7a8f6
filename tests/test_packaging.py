"""The built wheel, installed into a fresh virtual environment, runs (issue 13).

Offline and fast: the wheel is built without build isolation (setuptools and wheel come from the
test environment), installed with ``--no-deps --no-index`` into a venv made with ``--without-pip``
(the test environment's pip installs into it through ``--python``), and the dependencies, which
are not what this test is about, are borrowed from the test environment through a ``.pth`` line
placed after the venv's own site-packages. Nothing runs from the checkout: the working directory
is elsewhere and PYTHONPATH is unset, which the test checks by asking where the modules come from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.harness import ROOT


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def source_tree(to: Path) -> Path:
    """The checkout's files (tracked, or new and not ignored) without its build/ folder: pip builds in
    the source tree, and setuptools never deletes from build/lib a module moved away since (issue 20:
    proxy/connection.py shipped beside the proxy/connection/ package that replaced it)."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, to / name)
    return to


def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    source = source_tree(tmp_path / "src")
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        dist,
        source,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("llmserver-*.whl")
    with zipfile.ZipFile(wheel) as archive:  # every module shipped is one of the checkout's, none left over
        shipped_modules = {n for n in archive.namelist() if n.endswith(".py")}
    assert shipped_modules and all((ROOT / n).is_file() for n in shipped_modules), sorted(
        n for n in shipped_modules if not (ROOT / n).is_file()
    )

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    installed = run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr
    purelib = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip()
    )
    (purelib / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSERVER_") and k != "PYTHONPATH"}
    env |= {"LLMSERVER_DATABASE_URL": f"sqlite:///{tmp_path}/app.db", "LLMSERVER_BIND_ADDRESS": "127.0.0.1:18443"}
    env["LLMSERVER_RUNTIME_ENDPOINT"] = f"ipc://{tmp_path}/no-runtime.sock"
    where = run(
        python,
        "-c",
        "import llmserver, proxy.storage.migrate as m; print(llmserver.__file__); print(m.MIGRATIONS_DIR)",
        cwd=tmp_path,
        env=env,
    )
    module, migrations = where.stdout.split()
    shared = venv / "share" / "llmserver"
    # issue 20: the SQL files live in the checkout's top-level migrations/; the wheel ships them as data.
    assert module.startswith(str(purelib)) and Path(migrations) == shared.resolve() / "migrations", where.stdout
    shipped = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert shipped and sorted(p.name for p in Path(migrations).glob("*.sql")) == shipped
    for name in ("llmserver-runtime.service", "llmserver-proxy.service", "llmserver.sysusers.conf", "install.sh"):
        assert (shared / "systemd" / name).read_text() == (ROOT / "systemd" / name).read_text()
    assert (shared / "config" / "llmserver.env.example").is_file()

    llmserver = venv / "bin" / "llmserver"
    helped = run(llmserver, "--help", cwd=tmp_path, env=env)
    assert helped.returncode == 0 and "doctor" in helped.stdout and "backup" in helped.stdout, helped.stderr
    assert run(llmserver, "--version", cwd=tmp_path, env=env).stdout.strip() == "llmserver 0.1.0"
    for script in ("llmserver-runtime", "llmserver-proxy"):
        assert run(venv / "bin" / script, "--help", cwd=tmp_path, env=env).returncode == 0
    migrated = run(llmserver, "migrate", cwd=tmp_path, env=env)  # the .sql files are in the wheel
    assert migrated.returncode == 0 and f"applied {', '.join(p[:-4] for p in shipped)}" in migrated.stdout, migrated
    doctor = run(llmserver, "doctor", cwd=tmp_path, env=env)
    assert doctor.returncode == 1 and "Traceback" not in doctor.stderr, doctor.stderr
    assert "is migrated" in doctor.stdout and "runtime daemon not reachable" in doctor.stdout
    assert "1 problem(s) found." in doctor.stdout, doctor.stdout
