"""The import contracts are allow-lists: a new module is covered without editing them (issue 20).

``lint-imports`` runs on a copy of the source tree with one module added; the contracts must break.
The deny-lists they replace listed the modules a package may not import, so a package added later
was allowed everywhere; exhaustive layers on ``proxy`` and an allow-list for ``admin_ui`` are not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT

PACKAGES = ("proxy", "runtime", "admin_ui", "llmserver")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def tree_with(tmp_path: Path, files: dict[str, str], layer: str | None = None) -> Path:
    """A copy of the packages and setup.cfg with ``files`` added; ``layer`` put on top of proxy's."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    config = (ROOT / "setup.cfg").read_text()
    if layer is not None:
        config = config.replace("layers =\n    connection\n", f"layers =\n    {layer}\n    connection\n", 1)
    (tmp_path / "setup.cfg").write_text(config)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_contracts_hold_for_the_code_as_it_is() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("files", "layer", "broken"),
    [
        # A new sub-package of proxy on no layer: the exhaustive layers contract names it.
        ({"proxy/ollama/__init__.py": ""}, None, "proxy.ollama"),
        # The storage floor imports nothing else of proxy, even a module no contract used to list.
        ({"proxy/storage/extra.py": "import proxy.piecewise\n"}, None, "proxy.storage.extra -> proxy.piecewise"),
        # The lifecycle sees only storage below it.
        ({"proxy/lifecycle/extra.py": "import proxy.errors\n"}, None, "proxy.lifecycle.extra -> proxy.errors"),
        # A front added later and placed on a layer is still out of the console's reach.
        (
            {"proxy/ollama/__init__.py": "", "admin_ui/extra.py": "import proxy.ollama\n"},
            "ollama",
            "admin_ui.extra -> proxy.ollama",
        ),
    ],
    ids=["new-proxy-package", "storage-imports-proxy", "lifecycle-imports-proxy", "admin-imports-new-front"],
)
def test_a_module_outside_the_allow_lists_breaks_a_contract(
    tmp_path: Path, files: dict[str, str], layer: str | None, broken: str
) -> None:
    """issue 20: contracts that are allow-lists, so a module added later cannot slip past them."""
    result = lint(tree_with(tmp_path, files, layer))
    assert result.returncode == 1 and "BROKEN" in result.stdout, result.stdout + result.stderr
    assert broken in result.stdout.replace("\n", " "), result.stdout


def test_a_new_front_on_a_layer_is_allowed_where_the_layers_say(tmp_path: Path) -> None:
    """The control for the last case above: the new package alone, placed on a layer, keeps every contract."""
    result = lint(tree_with(tmp_path, {"proxy/ollama/__init__.py": "import proxy.metering\n"}, "ollama"))
    assert result.returncode == 0, result.stdout + result.stderr
