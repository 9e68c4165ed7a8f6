"""The Hugging Face cache as other Hugging Face tools read it: branch refs, and offline use (issue 25).

A pull downloads pinned to the commit the Hub named, so ``huggingface_hub`` writes no
``refs/<branch>``: :func:`write_ref` records which commit the branch asked for (``main`` by default)
was, so other tools find the files by branch without network. With ``HF_HUB_OFFLINE=1`` a pull asks
nothing of the Hub: :func:`cached_files` finds the model's files in the cache (by commit, or by the
branch's ref) or says which are missing.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from pathlib import Path

from proxy.lifecycle.errors import DownloadError

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def offline() -> bool:
    """``HF_HUB_OFFLINE=1`` (read by ``huggingface_hub`` itself)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def repo_dir(root: Path, repo: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return root / repo_folder_name(repo_id=repo, repo_type="model")


def write_ref(root: Path, repo: str, revision: str | None, commit: str) -> None:
    """``refs/<revision>`` (``main`` when none was asked) -> ``commit``; nothing for a commit itself."""
    branch = revision or "main"
    if _COMMIT.match(branch) or ".." in branch.split("/"):
        return
    ref = repo_dir(root, repo) / "refs" / branch
    ref.parent.mkdir(parents=True, exist_ok=True)
    if not ref.is_file() or ref.read_text().strip() != commit:
        ref.write_text(commit)


def cached_files(
    root: Path, repo: str, files: Sequence[str], patterns: Sequence[str], revision: str | None
) -> tuple[str, list[tuple[str, Path]]]:
    """``(commit, [(name, path)])`` of the model's files in the cache, without the network."""
    folder = repo_dir(root, repo)
    commit = revision if revision and _COMMIT.match(revision) else _read_ref(folder, revision or "main", repo, root)
    snapshot = folder / "snapshots" / commit
    if files:
        missing = [f for f in files if not (snapshot / f).is_file()]
        if missing:
            raise DownloadError(_offline_missing(repo, root, f"{missing[0]} at {commit[:12]}"))
        return commit, [(f, snapshot / f) for f in files]
    found = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    chosen = [n for n in found if not patterns or any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not chosen:
        raise DownloadError(_offline_missing(repo, root, f"no file matching {', '.join(patterns) or '*'}"))
    return commit, [(n, snapshot / n) for n in chosen]


def _read_ref(folder: Path, branch: str, repo: str, root: Path) -> str:
    ref = folder / "refs" / branch
    if not ref.is_file():
        raise DownloadError(_offline_missing(repo, root, f"no refs/{branch}"))
    return ref.read_text().strip()


def _offline_missing(repo: str, root: Path, what: str) -> str:
    return (
        f"HF_HUB_OFFLINE=1 and {repo} is not in the cache {root} ({what}): pull it once with network, or register "
        "the model with a local path (--path)"
    )
