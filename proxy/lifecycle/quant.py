"""Which GGUF file of a repository to run when the user did not say.

Repositories such as ``bartowski/...-GGUF`` hold one file per quantisation. The choice follows
what llama.cpp's and Ollama's users default to: ``Q4_K_M`` (a good size/quality balance), then any
other 4-bit K or legacy quantisation, then 5-bit, then 8-bit, then whatever is smallest. Split
files (``-00001-of-00003``) are skipped: the runtime loads single files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PREFERENCE = (
    re.compile(r"q4_k_m", re.I),
    re.compile(r"q4_k(_s)?\b|q4_k_s", re.I),
    re.compile(r"q4_\d|q4_", re.I),
    re.compile(r"q5_k_m", re.I),
    re.compile(r"q5_", re.I),
    re.compile(r"q8_0", re.I),
    re.compile(r"q8_", re.I),
)
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.I)


def gguf_files(names: Sequence[str]) -> list[str]:
    return [n for n in names if n.lower().endswith(".gguf") and not _SPLIT.search(n)]


def pick_gguf(names: Sequence[str], sizes: dict[str, int] | None = None) -> tuple[str, str] | None:
    """``(file, why)`` for the GGUF file to run among ``names``; None when there is none."""
    candidates = gguf_files(names)
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0], "the only GGUF file in the repository"
    for rank, pattern in enumerate(_PREFERENCE):
        matching = sorted(n for n in candidates if pattern.search(n))
        if matching:
            label = ("Q4_K_M", "Q4_K", "4-bit", "Q5_K_M", "5-bit", "Q8_0", "8-bit")[rank]
            return matching[0], f"{label} preferred among {len(candidates)} GGUF files"
    smallest = min(candidates, key=lambda n: ((sizes or {}).get(n, 0), n))
    return smallest, f"no usual quantisation found; the smallest of {len(candidates)} GGUF files"
