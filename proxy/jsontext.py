"""What a JSON body's raw text is checked for before and after it is parsed, by every reader of one
(the fronts' ``proxy.front.read_json``, the console's ``admin_ui.api.common.read_body``).

Nesting (:func:`too_deep`) is measured on the raw bytes (strings removed by one regular expression,
then the brackets counted) before ``json.loads`` sees them: a body nested 100,000 deep is a 400, not
a ``RecursionError``.

Lone UTF-16 surrogates (:func:`lone_surrogate`): ``"\\ud800"`` parses to a Python string no UTF-8
encoder takes.

JSON lets a string spell any UTF-16 code unit as ``\\uXXXX``; a high or low surrogate without its
partner is not a character. ``json.loads`` keeps it, and the first encoder it meets (SQLite, argon2,
a log line, the ZeroMQ frame to the daemon) raises ``UnicodeEncodeError``: a 500 far from the
request that carried it. Bodies are checked once, where they are parsed, and refused with a 400.
The raw bytes are searched first (in C), so a body without such an escape is never walked.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

SURROGATE = "the body holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not text"
_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")  # \uD800-\uDFFF: a surrogate, paired or not
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def too_deep(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects deeper than ``limit`` (brackets inside
    strings do not count). Fewer opening brackets than ``limit`` settle it without walking them."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # brackets in strings only add: settled in C, no regex
        return False
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if brackets.count(b"[") + brackets.count(b"{") <= limit:
        return False
    return max(itertools.accumulate(_STEP[b] for b in brackets)) > limit


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
