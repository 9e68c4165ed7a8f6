"""Bounds for every value an admin stores: one table of truth for the console's forms, its JSON API
and the command line (issue 19).

A value that passes here can be stored, shown on every page and used by every background loop: a
number is finite and of a size SQLite, JavaScript and ``datetime`` all take (``9999-12-31`` or
``1e300`` as an expiry made the keys pages answer 500), a time lies between 2000 and 3000, a name
holds no control character, no bidirectional override (a name that reads backwards), no lone
surrogate (which SQLite refuses to encode) and no trailing newline. Each check raises
:class:`ValidationError` naming the field, which the console answers with a 400 beside that field.

The repositories call these on every write (so no path can skip them); the forms and the CLI call
the ``parse_*`` functions to turn typed text into the same values first.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from datetime import date, datetime, time, timezone
from typing import Any

from proxy.storage.errors import ValidationError

MIN_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()
MAX_TIME = datetime(3000, 1, 1, tzinfo=timezone.utc).timestamp()
MAX_COUNT = 2**53 - 1  # limits and counters: exact in a JSON number, far inside SQLite's 64 bits
MAX_SECONDS = 10 * 365 * 86400.0  # a duration (keep-alive)
MAX_PARAMS = 32  # entries in a model's params
MAX_PARAM_TEXT = 1000
# Bidirectional controls (embedding, override, isolate, marks) and the line/paragraph separators.
_INVISIBLE = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


_LABELS = {
    "expires_at": "the expiry",
    "rpm_limit": "requests per minute",
    "tpm_limit": "tokens per minute",
    "hf_token_id": "the Hugging Face token id",
    "keep_alive": "keep-alive",
}


def _label(field: str) -> str:
    if "." in field:  # params.n_ctx: a name as typed
        return field
    return _LABELS.get(field, field.replace("_", " "))


def _show(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() and abs(number) < 1e18 else f"{number:g}"


def check_text(field: str, value: object, *, max_length: int, min_length: int = 1) -> str:
    """A single-line text: spaces around it dropped, no control, bidi or surrogate character."""
    if not isinstance(value, str):
        raise ValidationError(f"{_label(field)} must be text", field=field)
    text = value.strip(" ")
    if not min_length <= len(text) <= max_length:
        raise ValidationError(f"{_label(field)} must be {min_length} to {max_length} characters", field=field)
    for char in text:
        if char in _INVISIBLE or unicodedata.category(char) in ("Cc", "Cs"):
            raise ValidationError(
                f"{_label(field)} must not contain control, line-break or text-direction characters "
                f"(found U+{ord(char):04X})",
                field=field,
            )
    return text


def check_int(field: str, value: object, *, low: int, high: int = MAX_COUNT) -> int:
    """A whole number in ``[low, high]`` (a bool is not a number)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{_label(field)} must be a whole number from {low:,} to {high:,}", field=field)
    return value


def check_number(field: str, value: object, *, low: float, high: float, low_open: bool = False) -> float:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{_label(field)} must be a number", field=field)
    number = float(value)
    above = number > low if low_open else number >= low
    if not math.isfinite(number) or not above or number > high:
        side = "above" if low_open else "from"
        raise ValidationError(f"{_label(field)} must be a number {side} {_show(low)} up to {_show(high)}", field=field)
    return number


def check_time(field: str, value: object) -> float:
    """A unix time (seconds) from 2000-01-01 to 3000-01-01 UTC (the end of 2999-12-31)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{_label(field)} must be a unix time in seconds", field=field)
    if not (math.isfinite(value) and MIN_TIME <= value <= MAX_TIME):
        raise ValidationError(f"{_label(field)} must lie between the years 2000 and 2999", field=field)
    return float(value)


def parse_time(field: str, text: str) -> float:
    """``YYYY-MM-DD`` (the end of that day: the next midnight, UTC) or an ISO 8601 time (UTC unless it
    says otherwise)."""
    text = text.strip()
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(), timezone.utc)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
    except ValueError:
        raise ValidationError(f"{_label(field)} must be a day (YYYY-MM-DD) or an ISO 8601 time", field=field) from None
    try:
        stamp = moment.timestamp() + (86400.0 if len(text) == 10 else 0.0)
    except (OverflowError, ValueError):  # a moment at the edge of datetime's range
        stamp = math.inf
    return check_time(field, stamp)


def parse_int(field: str, text: str, *, low: int, high: int = MAX_COUNT) -> int | None:
    """A typed whole number (``1,000`` and ``1_000`` allowed); blank is ``None``."""
    text = text.strip().replace(",", "").replace("_", "")
    if not text:
        return None
    if not (text.isascii() and text.lstrip("+-").isdigit()) or len(text) > 20:
        raise ValidationError(f"{_label(field)} must be a whole number", field=field)
    return check_int(field, int(text), low=low, high=high)


def check_params(field: str, value: object) -> dict[str, Any]:
    """A model's backend parameters: at most 32 named scalars (or lists of text, such as ``voices``).
    Which names a backend knows is the runtime's to say when it loads the model."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"{_label(field)} must be an object", field=field)
    if len(value) > MAX_PARAMS:
        raise ValidationError(f"{_label(field)} holds at most {MAX_PARAMS} entries", field=field)
    checked: dict[str, Any] = {}
    for key, item in value.items():
        name = check_text(field, key, max_length=64)
        if not name.replace("_", "").replace("-", "").isalnum() or not name.isascii():
            raise ValidationError(f"{_label(field)}: {name!r} is not a parameter name", field=field)
        checked[name] = _param_value(f"{field}.{name}", item)
    return checked


def _param_value(field: str, value: object) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return check_int(field, value, low=-MAX_COUNT)
    if isinstance(value, float):
        return check_number(field, value, low=-1e15, high=1e15)
    if isinstance(value, str):
        return check_text(field, value, max_length=MAX_PARAM_TEXT, min_length=0)
    if isinstance(value, list) and len(value) <= 64:
        return [check_text(field, v, max_length=200) for v in value]
    raise ValidationError(f"{field} must be a number, true/false, text or a list of text", field=field)


def check_list(field: str, value: object, *, max_items: int, max_length: int) -> list[str]:
    """A list of at most ``max_items`` texts (see :func:`check_text`)."""
    if not isinstance(value, (list, tuple)) or len(value) > max_items:
        raise ValidationError(f"{_label(field)} must be a list of at most {max_items} texts", field=field)
    return [check_text(field, v, max_length=max_length) for v in value]
