"""Scales for the console's charts: "nice" value ticks, short number labels and time ticks.

Pure functions of numbers, no SVG: :mod:`admin_ui.charts.figure` turns them into geometry. The
value axis starts at zero (every series is a count or a duration) and ends at the first tick at or
above the largest value, with 1, 2, 2.5 or 5 times a power of ten between ticks, so the labels read
0, 250, 500, 750, 1k rather than 0, 237, 474. Time ticks fall on round UTC hours or days (every
6 h, every 2 days, ...) chosen so that at most a handful of labels share the axis.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

_NICE = (1.0, 2.0, 2.5, 5.0, 10.0)
_SI = ("", "k", "M", "G", "T", "P", "E")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
HOUR_STEPS = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 720)  # in hours
DAY_STEPS = (1, 2, 5, 7, 14, 28, 56, 91, 182, 364)  # in days


@dataclass(frozen=True)
class ValueScale:
    """``0``..``top`` with ``ticks`` (from 0, evenly spaced, the last one is ``top``)."""

    top: float
    ticks: tuple[float, ...]

    def fraction(self, value: float) -> float:
        """Where ``value`` sits, 0 at the bottom, 1 at the top (clamped)."""
        return min(max(value / self.top, 0.0), 1.0)


def value_scale(largest: float, most_ticks: int = 5, integer: bool = True) -> ValueScale:
    """A scale from 0 that holds ``largest`` with at most ``most_ticks`` nice ticks after 0.

    Nothing to show (``largest`` zero, negative or not finite) gives ``0..1``. Counts (``integer``)
    never get a fractional step.
    """
    if not math.isfinite(largest) or largest <= 0:
        largest = 1.0
    step = nice_step(largest / most_ticks)
    if integer and not step.is_integer():  # counts: 1, 2, 5, 10, 20, 50, 100, 250... never 2.5 or 0.5
        step = nice_step(step * 1.01) if step > 1 else 1.0
    count = max(1, math.ceil(largest / step - 1e-9))
    ticks = tuple(_clean(i * step) for i in range(count + 1))
    return ValueScale(ticks[-1], ticks)


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``raw`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(raw))
    for nice in _NICE:
        if nice * power >= raw * (1 - 1e-9):
            return _clean(nice * power)
    return _clean(10 * power)  # not reached: 10 * power > raw


def _clean(value: float) -> float:
    """``value`` without the float noise of ``i * step`` (0.30000000000000004 -> 0.3)."""
    return float(f"{value:.12g}")


def short_number(value: float) -> str:
    """A label of a few characters: 950, 1.5k, 12k, 3.25M, 1E (then powers of ten: 1e+21)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if abs(value) < 1:
        return f"{value:.2g}"
    magnitude = min(int(math.log10(abs(value)) // 3), len(_SI) - 1)
    text = f"{value / 1000**magnitude:.3g}"
    if abs(float(text)) >= 1000 and magnitude < len(_SI) - 1:  # 999.96k rounds up to 1M
        magnitude += 1
        text = f"{value / 1000**magnitude:.3g}"
    if "e" in text:  # beyond the largest prefix
        return f"{value:.2g}"
    return text + _SI[magnitude]


def grouped(value: float) -> str:
    """A full figure with thousands separators (for a hover title): 1,234,567 or 12.5."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def time_ticks(first: int, count: int, hours: int, most: int = 6) -> list[int]:
    """Indexes (0..count-1) of the buckets that get a label: round steps, at most ``most`` of them.

    ``first`` is the number of the first bucket since the epoch, each ``hours`` long (1 or 24);
    a tick falls where the bucket number is a multiple of the step (00:00, 06:00, ... UTC).
    """
    if count <= 0:
        return []
    steps = HOUR_STEPS if hours == 1 else DAY_STEPS
    step = next((s for s in steps if math.ceil(count / s) <= most), steps[-1])
    if hours == 1 and step >= 24:
        step -= step % 24  # whole days: ticks at midnight
    return [i for i in range(count) if (first + i) % step == 0] or [0]


def time_label(start: float, hours: int, with_year: bool = False) -> str:
    """An axis label: ``14:00`` (hourly, or the date at midnight), ``Nov 2`` (daily), ``2026-11-02``."""
    moment = datetime.fromtimestamp(start, timezone.utc)
    if with_year:
        return moment.strftime("%Y-%m-%d")
    if hours == 1 and moment.hour:
        return moment.strftime("%H:00")
    return f"{_MONTHS[moment.month - 1]} {moment.day}"


def time_title(start: float, hours: int) -> str:
    """A bucket's full name for its hover title: ``2026-11-02`` or ``2026-11-02 14:00-15:00 UTC``."""
    moment = time.gmtime(start)
    if hours == 1:
        return time.strftime("%Y-%m-%d %H:00-", moment) + f"{(moment.tm_hour + 1) % 24:02d}:00 UTC"
    return time.strftime("%Y-%m-%d (UTC)", moment)
