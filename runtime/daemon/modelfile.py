"""What a model path must be before any backend opens it: a regular file (or a link to one).

Opening a FIFO for reading blocks until something writes to it: a FIFO as a model path kept the
model ``loading`` for ever, its worker thread stuck in ``open`` (issue 18). A device, a socket or a
directory is no model either. Every backend loads a file, so the check is the daemon's, once, with
one message naming what the path is.
"""

from __future__ import annotations

import os
import stat

from runtime.api.protocol import ERR_LOAD_FAILED
from runtime.backends.base import BackendError

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_model_file(path: str) -> None:
    """Raise :class:`BackendError` (``load_failed``) unless ``path`` is a regular file; a missing
    file is left to the backend, which reports it in its own words."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise BackendError(f"model path {path} is {kind}, not a model file", code=ERR_LOAD_FAILED)
