"""Signed URLs out of every text that may reach a log, a row or a page (issue 25).

The Hub answers a file request with a redirect to its CDN whose query string signs the URL
(``Expires``, ``Signature``, ``Key-Pair-Id``): for a gated repository, whoever reads it can fetch the
file until it expires. HTTP clients log the URLs they fetch, and their errors quote them, so the one
logging setup (:mod:`llmserver.logging`) and the download errors pass text through
:func:`redact_urls`, which keeps scheme, host and path and drops the query string.
"""

from __future__ import annotations

import re

_QUERY = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#\"'<>]+)\?[^\s\"'<>]*")
REDACTED = "?<query redacted>"


def redact_urls(text: str) -> str:
    """``text`` with the query string of every URL replaced by a marker."""
    return _QUERY.sub(lambda m: m.group(1) + REDACTED, text) if "?" in text else text
