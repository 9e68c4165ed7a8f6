"""Reading a stored row defensively: a value that no check lets in today (written by an older
version, by hand in ``sqlite3``, or before :mod:`proxy.storage.bounds` existed) must not break a
page or a background loop for every other row (issue 19).

SQLite columns are typed loosely: a ``REAL`` column can hold the text ``'inf'`` and a JSON column
text that does not parse. :class:`StoredRow` reads each column as the type the row's dataclass
promises; a value that is not is logged (once per process and column) and replaced by a harmless
default. Columns that limit what a row allows (an expiry, a quota, an allow-list, a keep-alive) are
also named in :attr:`StoredRow.invalid`, and their owners refuse to act on such a row (a key refuses
every request, the reconciler leaves the model alone) while the console shows it as invalid.
Columns only shown (counters, timestamps of the past) are replaced without more ado.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

from proxy.storage.bounds import MAX_COUNT, MAX_TIME

log = logging.getLogger(__name__)

_said: set[tuple[str, str]] = set()


class StoredRow:
    """Typed reads of one ``sqlite3.Row``; ``what`` names the row in the log (``API key 7``)."""

    def __init__(self, row: sqlite3.Row, what: str) -> None:
        self._row = row
        self._what = what
        self.invalid: tuple[str, ...] = ()

    def _bad(self, column: str, shown: bool) -> None:
        if not shown:
            self.invalid = (*self.invalid, column)
        if (self._what, column) not in _said:
            _said.add((self._what, column))
            value = repr(self._row[column])[:80]
            log.warning("%s: stored %s %s is not valid; %s", self._what, column, value, _consequence(shown))

    def text(self, column: str, default: str) -> str:
        value = self._row[column]
        if isinstance(value, str):
            return value
        self._bad(column, True)
        return default

    def integer(self, column: str, shown: bool = True) -> int:
        value = self._row[column]
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_COUNT:
            return value
        self._bad(column, shown)
        return 0

    def optional_integer(self, column: str) -> int | None:
        return None if self._row[column] is None else self.integer(column, shown=False)

    def number(self, column: str, *, low: float, high: float, shown: bool = False) -> float | None:
        value = self._row[column]
        if value is None:
            return None
        if isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high:
            return float(value)
        self._bad(column, shown)
        return None

    def time(self, column: str, default: float, shown: bool = True) -> float:
        found = self.number(column, low=0.0, high=MAX_TIME, shown=shown)
        if found is None and self._row[column] is None:
            self._bad(column, shown)
        return default if found is None else found

    def optional_time(self, column: str, shown: bool = False) -> float | None:
        return self.number(column, low=0.0, high=MAX_TIME, shown=shown)

    def choice(self, column: str, options: Sequence[str]) -> str | None:
        value = self._row[column]
        if value is None or value in options:
            return value if value is None else str(value)
        self._bad(column, False)
        return None

    def json_value(self, column: str, kind: type, shown: bool = False) -> Any:
        value = self._row[column]
        try:
            loaded = json.loads(value) if isinstance(value, (str, bytes)) else None
        except (ValueError, RecursionError):
            loaded = None
        if isinstance(loaded, kind):
            return loaded
        self._bad(column, shown)
        return kind()

    def json_object(self, column: str, shown: bool = False) -> dict[str, Any]:
        loaded: dict[str, Any] = self.json_value(column, dict, shown)
        return loaded

    def texts(self, column: str) -> tuple[str, ...]:
        loaded = self.json_value(column, list)
        if all(isinstance(v, str) for v in loaded):
            return tuple(loaded)
        self._bad(column, False)
        return ()

    def optional_texts(self, column: str) -> tuple[str, ...] | None:
        return None if self._row[column] is None else self.texts(column)


def _consequence(shown: bool) -> str:
    return "shown as a default" if shown else "the row is marked invalid until an admin sets it again"
