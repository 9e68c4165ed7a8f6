"""Budget periods: the calendar period a key's token limit applies to (daily, weekly, monthly).

A key with a ``budget_period`` has its own period counter (``period_tokens_used``) and the start
of the period that counter belongs to (``period_start``). Nothing resets it on a schedule: the
reservation that first runs in a new period finds ``period_start`` behind the current one and
zeroes the counter in the same write transaction (``proxy.storage.usage.reserve_on``), so the
reset is atomic with the quota check and needs no cron job. Periods are calendar-aligned in a
configured IANA time zone (UTC by default): days start at midnight, weeks on Monday, months on
the 1st.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from proxy.storage.errors import ValidationError

PERIODS = ("daily", "weekly", "monthly")


def zone(name: str) -> ZoneInfo | timezone:
    """The time zone called ``name`` (``UTC`` or an IANA name); :class:`ValidationError` if unknown."""
    if name.upper() == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {name!r}; expected UTC or an IANA name (Europe/Paris)") from None


def period_bounds(period: str, now: float, tz: ZoneInfo | timezone = timezone.utc) -> tuple[float, float]:
    """``(start, end)`` unix times of the ``period`` that contains ``now``."""
    if period not in PERIODS:
        raise ValidationError(f"a budget period must be one of {', '.join(PERIODS)}")
    local = datetime.fromtimestamp(now, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        start, end = midnight, _add_days(midnight, 1, tz)
    elif period == "weekly":
        start = _add_days(midnight, -midnight.weekday(), tz)
        end = _add_days(start, 7, tz)
    else:
        start = midnight.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return _timestamp(start, tz), _timestamp(end, tz)


def _add_days(day: datetime, n: int, tz: ZoneInfo | timezone) -> datetime:
    """Midnight ``n`` calendar days away (wall-clock arithmetic, so DST changes do not shift it)."""
    moved = (day.replace(tzinfo=None) + timedelta(days=n)).replace(tzinfo=tz)
    return moved


def _timestamp(local: datetime, tz: ZoneInfo | timezone) -> float:
    # Re-attach the zone so the offset is the one in force at that wall-clock time.
    return local.replace(tzinfo=None).replace(tzinfo=tz).timestamp()


def format_reset(when: float, tz: ZoneInfo | timezone = timezone.utc) -> str:
    """An ISO 8601 time with its offset, as the 429 message and the pages show it."""
    return datetime.fromtimestamp(when, tz).isoformat(timespec="seconds")
