"""Lone UTF-16 surrogates in JSON text: ``"\\ud800"`` parses to a Python string no UTF-8 encoder takes.

JSON lets a string spell any UTF-16 code unit as ``\\uXXXX``; a high or low surrogate without its
partner is not a character. ``json.loads`` keeps it, and the first encoder it meets (SQLite, argon2,
a log line, the ZeroMQ frame to the daemon) raises ``UnicodeEncodeError``: a 500 far from the
request that carried it. Bodies are checked once, where they are parsed, and refused with a 400.
The raw bytes are searched first (in C), so a body without such an escape is never walked.
"""

from __future__ import annotations

import re
from typing import Any

_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")  # \uD800-\uDFFF: a surrogate, paired or not


def lone_surrogate(raw: bytes, value: Any) -> bool:
    """Whether the parsed JSON ``value`` (parsed from ``raw``) holds a string or key with a lone surrogate."""
    if not _ESCAPE.search(raw):
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _encodes(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
