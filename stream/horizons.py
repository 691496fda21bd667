"""The long horizons a marketer judges a campaign by: ``today``, ``7d``, ``30d`` and ``flight``.

Pure: a clock, a time zone and a plan's flight in; for each horizon the span of long buckets it
sums out. Horizons are calendar days in the campaign's time zone, as ad platforms' rules count
them ("last 7 days including today"): ``today`` from the campaign's last midnight, ``7d`` from
the midnight six days before, ``30d`` from the one 29 days before, ``flight`` from the midnight
that starts the plan's flight (only while it has started), each through the current bucket. A
day is whatever its zone makes it: 23 or 25 hours across a daylight-saving change, and where a
change skips midnight (Santiago, Beirut) the day begins at the first instant of its date.

Sums are over whole long buckets (``KPI_LONG_BUCKET``, UTC-aligned), which cannot be split: a
bucket belongs to the day in which it starts. A day's sums are exactly its own hours only where
every UTC offset of the zone is a whole number of buckets (``grid_problem``): India (+05:30) or
Nepal (+05:45) do not fit hour buckets, so the workers refuse such a ``KPI_TIMEZONE`` and the
plan fold such a plan's time zone, naming the bucket that fits (30m, 15m). ``horizons`` stays
sane for a zone that does not fit (no bucket in two days, edges that are real midnights), but
its days then start and end on the bucket after their midnight.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from .durations import format_duration

_DAYS_BACK = {"today": 0, "7d": 6, "30d": 29}
DAY_HORIZONS = tuple(_DAYS_BACK)  # every campaign has them; ``flight`` only a planned one
HORIZONS = (*DAY_HORIZONS, "flight")
DAY_S = 86_400
_HOUR_S = 3600
_YEARS_CHECKED = 2  # a zone's offsets from this many years back to as many ahead


class Span(NamedTuple):
    """Long buckets starting in ``[first, last]`` (epoch ms); empty where ``first > last``."""

    first: int
    last: int


class Horizons(NamedTuple):
    spans: dict[str, Span]  # by horizon; ``flight`` only once the flight has begun
    day_start_ms: int  # the instant the campaign's day began (its last midnight)
    day_end_ms: int  # the instant its next day begins: always after ``now_ms``
    flight_start_ms: int | None  # the midnight that starts the flight
    flight_end_ms: int | None  # the midnight after its last day
    # The day's buckets start in ``[day_first_ms, day_next_ms)``: its elapsed share is taken
    # over them, as its sum is. ``day_start_ms`` and ``day_end_ms`` where the zone fits the grid.
    day_first_ms: int
    day_next_ms: int


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local(instant_ms: int, zone: str) -> datetime:
    return datetime.fromtimestamp(instant_ms / 1000, tz=_zone(zone))


def local_date(now_ms: int, zone: str) -> date:
    return _local(now_ms, zone).date()


@lru_cache(maxsize=8192)  # a zone's midnights are read by every row of it, every round
def local_midnight_ms(day: date, zone: str) -> int:
    """The instant a calendar day begins in ``zone``: its midnight, or, where a daylight-saving
    change skips midnight (clocks going from 23:59:59 to 01:00), the change itself."""
    naive = datetime.combine(day, time(0))
    candidates = sorted(
        {int(naive.replace(tzinfo=_zone(zone), fold=fold).timestamp() * 1000) for fold in (0, 1)}
    )
    for instant in candidates:  # both are midnights where it occurs twice: the first began it
        local = _local(instant, zone)
        if local.date() == day and local.time() == time(0):
            return instant
    # Midnight is in a gap: the day begins at the change, between the instants its two offsets
    # make of midnight (before it, the date is still the day before).
    return _first_of_date(candidates[0] - 3_600_000, candidates[-1], day, zone)


def _first_of_date(before_ms: int, after_ms: int, day: date, zone: str) -> int:
    """The instant in ``(before_ms, after_ms]`` at which the local date reaches ``day``, where it
    is before ``day`` at ``before_ms`` and has reached it at ``after_ms``; to the second (changes
    of offset are on whole seconds)."""
    lo, hi = before_ms // 1000, -(-after_ms // 1000)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if local_date(mid * 1000, zone) >= day:
            hi = mid
        else:
            lo = mid
    return hi * 1000


def _day_edges(now_ms: int, zone: str) -> tuple[date, int, int]:
    """(local date, the instant it began, the instant the next one begins) at ``now_ms``:
    ``start <= now_ms < end`` even where a zone's dates once went back (historical changes
    across midnight), by looking for the change of date around ``now_ms`` itself then."""
    today = local_date(now_ms, zone)
    start = local_midnight_ms(today, zone)
    end = local_midnight_ms(today + timedelta(days=1), zone)
    if start > now_ms:
        start = min(now_ms, _first_of_date(now_ms - 2 * DAY_S * 1000, now_ms, today, zone))
    if end <= now_ms:
        tomorrow = today + timedelta(days=1)
        end = max(now_ms + 1, _first_of_date(now_ms, now_ms + 2 * DAY_S * 1000, tomorrow, zone))
    return today, start, end


def _ceil(instant_ms: int, bucket_ms: int) -> int:
    """The first bucket start at or after ``instant_ms``: where that instant's day begins."""
    return -(-instant_ms // bucket_ms) * bucket_ms


@lru_cache(maxsize=4096)  # rows of one zone and flight share them within a bucket
def horizons(
    now_ms: int,
    zone: str,
    long_bucket_ms: int,
    flight_start: date | None = None,
    flight_end: date | None = None,
) -> Horizons:
    """Each horizon's buckets at ``now_ms``. A bucket belongs to the day in which it starts, so
    consecutive days' spans neither overlap nor leave a gap, whatever the zone; where it fits
    the grid (``grid_problem``), a day's first bucket starts at its midnight."""
    today, day_start, day_end = _day_edges(now_ms, zone)
    current = now_ms - now_ms % long_bucket_ms
    first_today = _ceil(day_start, long_bucket_ms)
    spans = {
        name: Span(
            _ceil(local_midnight_ms(today - timedelta(days=back), zone), long_bucket_ms)
            if back
            else first_today,
            current,
        )
        for name, back in _DAYS_BACK.items()
    }
    start_ms = end_ms = None
    if flight_end is not None:
        end_ms = local_midnight_ms(flight_end + timedelta(days=1), zone)
    if flight_start is not None:
        start_ms = local_midnight_ms(flight_start, zone)
        if flight_start <= today:
            # The flight's own days: after its end, nothing more counts in it.
            last = current
            if end_ms is not None:
                last = min(current, _ceil(end_ms, long_bucket_ms) - long_bucket_ms)
            spans["flight"] = Span(_ceil(start_ms, long_bucket_ms), last)
    return Horizons(
        spans, day_start, day_end, start_ms, end_ms, first_today, _ceil(day_end, long_bucket_ms)
    )


# -- whether a zone's days start on the bucket grid --------------------------------------------


@lru_cache(maxsize=1024)
def _offsets(zone: str, year: int) -> tuple[int, ...]:
    """The UTC offsets (seconds) ``zone`` uses from ``year`` - 2 to ``year`` + 2: sampled daily,
    and hourly through a day in which the offset changed (so both sides of every change, and
    any offset in force for an hour within that day, are seen)."""
    tz = _zone(zone)

    def offset(instant: int) -> int:
        delta = datetime.fromtimestamp(instant, tz).utcoffset()
        return 0 if delta is None else int(delta.total_seconds())

    first = int(datetime(year - _YEARS_CHECKED, 1, 1, tzinfo=UTC).timestamp())
    last = int(datetime(year + _YEARS_CHECKED + 1, 1, 1, tzinfo=UTC).timestamp())
    seen = {offset(first)}
    before = offset(first)
    for day in range(first + DAY_S, last + 1, DAY_S):
        after = offset(day)
        if after != before:
            seen.update(offset(hour) for hour in range(day - DAY_S, day, _HOUR_S))
            seen.add(after)
            before = after
    return tuple(sorted(seen))


def _utc_offset(seconds: int) -> str:
    sign = "-" if seconds < 0 else "+"
    minutes = abs(seconds) // 60
    text = f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return text if abs(seconds) % 60 == 0 else f"{text}:{abs(seconds) % 60:02d}"


def grid_problem(zone: str, long_bucket_ms: int) -> str | None:
    """None where every UTC offset ``zone`` has used or will use within two years of today is a
    whole number of long buckets (its days then start on a bucket: a bucket is never in two
    days); else why not, naming the largest bucket that fits. Never raises."""
    return _grid_problem(zone, long_bucket_ms, datetime.now(UTC).year)


@lru_cache(maxsize=1024)
def _grid_problem(zone: str, long_bucket_ms: int, year: int) -> str | None:
    bucket_s = long_bucket_ms / 1000
    if bucket_s <= 0 or bucket_s != int(bucket_s) or DAY_S % bucket_s:
        return f"KPI_LONG_BUCKET ({long_bucket_ms} ms) must divide a day in whole seconds"
    try:
        offsets = _offsets(zone, year)
    except Exception:
        return f"timezone {str(zone)[:60]!r} is not an IANA time zone"
    if all(offset % bucket_s == 0 for offset in offsets):
        return None
    fits = math.gcd(DAY_S, *offsets)  # the largest divisor of a day that every offset is of
    suggestion = format_duration(fits)
    if fits % 2 == 0 and fits // 2 >= 900 and fits // 2 % 60 == 0:
        suggestion += f" (or {format_duration(fits // 2)})"
    wrong = [_utc_offset(o) for o in offsets if o % bucket_s]
    when = " part of the year" if len(wrong) < len(offsets) else ""
    return (
        f"timezone {zone} is {' and '.join(wrong)}{when}, not a whole number of KPI_LONG_BUCKET buckets "
        f"({format_duration(int(bucket_s))}): its days would not start on a bucket; "
        f"run the workers with KPI_LONG_BUCKET={suggestion}"
    )
