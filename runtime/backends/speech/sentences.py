"""Text cut into the pieces a synthesiser speaks one at a time: sentences, and long ones at a pause.

Audio streams sentence by sentence, so the first piece decides how soon a listener hears anything:
a sentence longer than :data:`MAX_PIECE` is cut at its last comma (else its last space) before that
length. Each piece is one line (control characters and line breaks become spaces).
"""

from __future__ import annotations

import re

MAX_PIECE = 240  # characters; about 15 s of speech
# A sentence's end (a full stop, ! ? … ; : or their full-width forms, closing quotes or brackets;
# captured, to stay with the sentence) then space; or a blank line.
_END = re.compile("([.!?\u2026;:\u3002\uff01\uff1f][\"'\u201d\u2019)\\]]*)\\s+|\n\\s*\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")


def split_sentences(text: str, max_piece: int = MAX_PIECE) -> list[str]:
    """``text`` as non-empty one-line pieces of at most ``max_piece`` characters (a single word
    longer than that stays whole)."""
    pieces: list[str] = []
    parts = _END.split(text)  # text, end mark (None after a blank line), text, ...
    for at in range(0, len(parts), 2):
        sentence = parts[at] + (parts[at + 1] or "" if at + 1 < len(parts) else "")
        line = _SPACES.sub(" ", _CONTROL.sub(" ", sentence)).strip()
        while len(line) > max_piece:
            cut = _cut_at(line, max_piece)
            pieces.append(line[:cut].strip())
            line = line[cut:].strip()
        if line:
            pieces.append(line)
    return pieces


def _cut_at(line: str, limit: int) -> int:
    for mark in (", ", "; ", " "):
        at = line.rfind(mark, 1, limit)
        if at > 0:
            return at + len(mark) - 1
    return len(line)  # one word longer than the limit: kept whole
