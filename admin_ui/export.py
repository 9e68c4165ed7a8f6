"""What the console's CSV exports share (the usage page's and the request log API's)."""

from __future__ import annotations


def csv_cell(text: str) -> str:
    """Defuse spreadsheet formulas in user-supplied text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
