"""Downloads from the Hugging Face Hub with ``huggingface_hub``, into the hub's own cache layout.

One model is a list of files of one repository at one revision: named files (a ``.gguf`` or an
``.rkllm``) or the files matching patterns (a snapshot). The steps:

1. ``model_info`` (with file metadata) resolves the revision to a commit and lists every file with
   its size and, for LFS files, its sha256; gated, missing, unauthorised and offline are told apart
   here, before a byte is written.
2. The free space of the cache is checked against what is still missing.
3. Each file goes through ``hf_hub_download`` (pinned to the commit), which writes to
   ``<cache>/models--org--name/blobs`` and links ``snapshots/<commit>/<file>``, so other tools share
   the cache. A connection cut mid-file is resumed by the client with a ``Range`` request; a file
   already complete is not fetched again, and the part of a file that a cancelled or killed pull
   had written is continued with a ``Range`` request too (:meth:`Downloader._resume_leftover`).
4. Each file's sha256 is checked against the Hub's; a mismatch deletes the blob and fails.

Progress and cancellation ride on the ``tqdm_class`` hook the client offers: every chunk written
reports the bytes done, and raises :class:`DownloadCancelledError` once a cancel was asked for
(:mod:`proxy.lifecycle.progress`); failures are told apart in :mod:`proxy.lifecycle.failure`.
The endpoint is the client's own (``HF_ENDPOINT``, read by ``huggingface_hub``) unless given.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from proxy.lifecycle.cache import cached_files, offline, write_ref
from proxy.lifecycle.errors import DownloadCancelledError, DownloadError
from proxy.lifecycle.failure import translate
from proxy.lifecycle.partial import keep_partial, resume_leftover, sha256_file
from proxy.lifecycle.progress import progress_bar_class

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes in total), from the download thread
SPACE_MARGIN = 64 * 1024 * 1024  # left free beyond the download itself


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class Listing:
    commit: str
    files: tuple[RemoteFile, ...]


@dataclass(frozen=True)
class Fetched:
    """What a download produced: the file (one file) or the snapshot directory (several)."""

    path: Path
    commit: str
    files: tuple[str, ...]
    size: int
    sha256: str | None


class Downloader:
    """Blocking downloads (run them in a thread); ``cache_dir`` None: the hub's default cache."""

    def __init__(self, cache_dir: Path | None, endpoint: str | None = None, show_progress: bool = False) -> None:
        self.cache_dir = cache_dir
        self.endpoint = endpoint
        self.show_progress = show_progress

    def list_files(self, repo: str, revision: str | None, token: str | None) -> Listing:
        """The files of ``repo`` at ``revision`` with sizes and checksums."""
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=self.endpoint).model_info(repo, revision=revision, files_metadata=True, token=token)
        except Exception as exc:
            raise translate(exc, repo, revision, token, self._endpoint()) from None
        files = tuple(
            RemoteFile(s.rfilename, int(s.size or (s.lfs.size if s.lfs else 0)), s.lfs.sha256 if s.lfs else None)
            for s in (info.siblings or [])
        )
        return Listing(str(info.sha), files)

    def fetch(
        self,
        repo: str,
        *,
        files: Sequence[str] = (),
        patterns: Sequence[str] = (),
        revision: str | None = None,
        token: str | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> Fetched:
        """Download ``files`` (or every file matching ``patterns``) of ``repo`` and check them.

        With ``HF_HUB_OFFLINE=1``, the files already in the cache, the Hub not asked (issue 25)."""
        root = self.cache_dir or _default_cache()
        if offline():
            commit, found = cached_files(root, repo, files, patterns, revision)
            return _fetched([p for _, p in found], commit, [n for n, _ in found], patterns, None)
        listing = self.list_files(repo, revision, token)
        chosen = select_files(listing, files, patterns, repo)
        self._check_space(chosen, listing.commit, repo)
        total, done = sum(f.size for f in chosen), 0
        cancel = cancel or threading.Event()
        paths: list[Path] = []
        for remote in chosen:
            keep = functools.partial(self._keep_partial, repo, remote)
            bar = progress_bar_class(_offset(progress, done, total), cancel, self.show_progress, keep)
            paths.append(self._fetch_one(repo, listing.commit, remote, token, bar))
            done += remote.size
            if progress:
                progress(done, total)
        write_ref(root, repo, revision, listing.commit)  # other tools find it by branch, offline too
        return _fetched(paths, listing.commit, [f.name for f in chosen], patterns, chosen[0].sha256)

    def _fetch_one(self, repo: str, commit: str, remote: RemoteFile, token: str | None, bar: type) -> Path:
        from huggingface_hub import hf_hub_download

        try:
            self._resume_leftover(repo, commit, remote, token, bar)
            local = Path(
                hf_hub_download(
                    repo,
                    remote.name,
                    revision=commit,
                    cache_dir=self.cache_dir,
                    token=token or False,
                    endpoint=self.endpoint,
                    tqdm_class=bar,
                )
            )
        except DownloadCancelledError:
            raise
        except Exception as exc:
            raise translate(exc, repo, commit, token, self._endpoint(), remote.name) from None
        verify(local, remote)
        return local

    def _resume_leftover(self, repo: str, commit: str, remote: RemoteFile, token: str | None, bar: type) -> None:
        """Continue what a killed or cancelled pull of this file left (:mod:`proxy.lifecycle.partial`)."""
        if remote.sha256 is not None:
            root = self.cache_dir or _default_cache()
            resume_leftover(root, repo, commit, remote.name, remote.size, remote.sha256, token, self.endpoint, bar)

    def _keep_partial(self, repo: str, remote: RemoteFile) -> None:
        """On cancel, mid-file: keep what arrived (:func:`~proxy.lifecycle.partial.keep_partial`)."""
        if remote.sha256 is not None:
            keep_partial(self.cache_dir or _default_cache(), repo, remote.sha256)

    def _check_space(self, chosen: Sequence[RemoteFile], commit: str, repo: str) -> None:
        root = self.cache_dir or _default_cache()
        root.mkdir(parents=True, exist_ok=True)
        needed = sum(f.size for f in chosen)
        free = shutil.disk_usage(root).free
        if needed + SPACE_MARGIN > free:
            raise DownloadError(
                f"not enough disk space for {repo}: it needs {_size(needed)} plus {_size(SPACE_MARGIN)} kept free, "
                f"{root} has {_size(free)} free "
                "(free some space or point LLMSERVER_HF_CACHE at a larger disk)"
            )

    def _endpoint(self) -> str:
        if self.endpoint:
            return self.endpoint
        from huggingface_hub import constants

        return str(constants.ENDPOINT)


def _offset(progress: Progress | None, start: int, total: int) -> Callable[[int], None]:
    def report(n: int) -> None:
        if progress is not None:
            progress(start + n, total)

    return report


def select_files(listing: Listing, files: Sequence[str], patterns: Sequence[str], repo: str) -> list[RemoteFile]:
    by_name = {f.name: f for f in listing.files}
    if files:
        missing = [f for f in files if f not in by_name]
        if missing:
            raise DownloadError(
                f"{repo} has no file {missing[0]!r} at revision {listing.commit[:12]} "
                f"(it has: {', '.join(sorted(by_name)[:20]) or 'no files'})"
            )
        return [by_name[f] for f in files]
    chosen = [f for f in listing.files if not patterns or any(fnmatch.fnmatch(f.name, p) for p in patterns)]
    if not chosen:
        raise DownloadError(f"no file of {repo} matches {', '.join(patterns)}")
    return chosen


def verify(path: Path, remote: RemoteFile) -> None:
    """Size and (for LFS files) sha256 against the Hub's; a bad blob is deleted."""
    size = path.stat().st_size
    digest = sha256_file(path) if remote.sha256 else None
    if size == remote.size and (remote.sha256 is None or digest == remote.sha256):
        return
    blob = path.resolve()
    blob.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    raise DownloadError(
        f"{remote.name}: the downloaded file does not match the Hub's checksum (size {size}, expected "
        f"{remote.size}); it was deleted: pull again"
    )


def _fetched(paths: list[Path], commit: str, names: list[str], patterns: Sequence[str], sha: str | None) -> Fetched:
    """One file, or the ``snapshots/<commit>`` directory holding every file."""
    single = len(names) == 1 and not patterns
    path = paths[0] if single else Path(str(paths[0])[: -len(names[0])].rstrip("/"))
    if single and sha is None and _is_sha256(paths[0].resolve().name):
        sha = paths[0].resolve().name  # an LFS blob is named by its sha256
    size = sum(p.stat().st_size for p in paths)
    return Fetched(path, commit, tuple(names), size, sha if single else None)


def _is_sha256(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _default_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TiB"
