"""The partial files of a pull in the Hugging Face cache: kept on cancel, continued after a kill.

``huggingface_hub`` resumes a cut connection within one call, and deletes its partial file when a
call fails; but a process killed mid-file (SIGKILL, a power cut) leaves
``blobs/<sha256>.<id>.incomplete`` behind, and a cancel would lose what arrived. :func:`keep_partial`
keeps a cancelled file's bytes under a name :func:`resume_leftover` finds; that one continues the
largest leftover with a ``Range`` request, checks its sha256 and puts it in place as the blob, so the
``hf_hub_download`` that follows only links it into the snapshot.

Two things the client's own download does and these must too (issue 25):

- The token goes to the Hub only. The file's bytes come from wherever the Hub redirects (its CDN, with
  a signed URL): the ``Authorization`` header is sent there only when that is the Hub's own origin.
- A partial file is written only when it is a plain file of the cache. A symbolic link planted among
  the partial blobs (issue 18) would carry the appended bytes anywhere the cache's user may write: it
  is removed, never followed (``lstat``, then ``O_NOFOLLOW`` when opening), and the log says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

from proxy.lifecycle.errors import DownloadError

log = logging.getLogger(__name__)


def blobs_dir(root: Path, repo: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return root / repo_folder_name(repo_id=repo, repo_type="model") / "blobs"


def drop_planted_links(blobs: Path, sha256: str) -> None:
    """Remove whatever among ``<sha256>*.incomplete`` is not a plain file (a planted link), saying so."""
    for path in blobs.glob(f"{sha256}*.incomplete"):
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            log.warning(
                "%s is not a plain file (a symbolic link planted among the partial downloads?): removed, not "
                "followed; the download starts that file again",
                path,
            )
            path.unlink(missing_ok=True)


def same_origin(url: str, location: str) -> bool:
    """Whether ``location`` is served by the origin of ``url`` (scheme, host and port)."""
    a, b = urlsplit(url), urlsplit(location)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def resume_leftover(
    root: Path,
    repo: str,
    commit: str,
    name: str,
    size: int,
    sha256: str,
    token: str | None,
    endpoint: str | None,
    bar: type,
) -> None:
    """Continue the largest ``<sha256>.*.incomplete`` a killed or cancelled pull left, if any."""
    from filelock import FileLock, Timeout

    blobs = blobs_dir(root, repo)
    blob = blobs / sha256
    drop_planted_links(blobs, sha256)
    leftovers = sorted(blobs.glob(f"{sha256}.*.incomplete"), key=lambda p: p.stat().st_size)
    if blob.exists() or not leftovers:
        return
    try:
        with FileLock(str(root / ".locks" / blobs.parent.name / f"{sha256}.lock"), timeout=0):
            partial = leftovers[-1]
            for other in leftovers[:-1]:
                other.unlink(missing_ok=True)
            _continue(partial, repo, commit, name, size, token, endpoint, bar)
            if sha256_file(partial) == sha256:
                os.replace(partial, blob)
            else:
                partial.unlink()  # the next step downloads it whole
    except Timeout:
        return  # another process is downloading this blob right now


def _continue(
    partial: Path, repo: str, commit: str, name: str, size: int, token: str | None, endpoint: str | None, bar: type
) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    try:
        fd = os.open(partial, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    except OSError as exc:  # replaced by a link since the check (ELOOP), or gone
        raise DownloadError(
            f"{partial} cannot be continued safely ({exc.strerror}): not followed; pull again"
        ) from None
    with os.fdopen(fd, "ab") as f:
        done = os.fstat(f.fileno()).st_size
        log.info("resuming %s/%s from byte %d (left by a download that was stopped)", repo, name, done)
        url = hf_hub_url(repo, name, revision=commit, endpoint=endpoint)
        location = get_hf_file_metadata(url, token=token or False, endpoint=endpoint).location
        headers = build_hf_headers(token=token or False)
        if not same_origin(url, location):  # the CDN: the token stays with the Hub, as the client does
            headers.pop("authorization", None)
            headers.pop("Authorization", None)
        http_get(location, f, resume_size=done, headers=headers, expected_size=size, tqdm_class=bar)


def keep_partial(root: Path, repo: str, sha256: str) -> None:
    """On cancel, mid-file: keep what arrived for :func:`resume_leftover` to continue later.

    ``huggingface_hub`` deletes its partial file when the call fails; a hard link made now, while the
    file is still open, keeps its bytes (those still buffered included, flushed when the client closes
    it) under a name the resume step finds: a cancelled pull resumes where it stopped, as one killed does."""
    blobs = blobs_dir(root, repo)
    kept = blobs / f"{sha256}.kept.incomplete"
    writing = [p for p in blobs.glob(f"{sha256}.*.incomplete") if p != kept and not p.is_symlink()]
    if not writing:
        return  # the resume step itself was writing ``kept``: it stays as it is
    current = max(writing, key=lambda p: p.stat().st_mtime)
    with contextlib.suppress(OSError):
        spare = kept.with_name(kept.name + ".new")
        spare.unlink(missing_ok=True)
        os.link(current, spare, follow_symlinks=False)
        os.replace(spare, kept)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
