"""The long horizons a marketer judges a campaign by: ``today``, ``7d``, ``30d`` and ``flight``.

Pure: a clock, a time zone and a plan's flight in; for each horizon the span of hour buckets it
sums out. Horizons are calendar days in the campaign's time zone, as ad platforms' rules count
them ("last 7 days including today"): ``today`` from the campaign's last midnight, ``7d`` from
the midnight six days before, ``30d`` from the one 29 days before, ``flight`` from the midnight
that starts the plan's flight (only while it has started), each through the current hour. A
day is whatever its zone makes it: 23 or 25 hours across a daylight-saving change.

Sums are over whole hour buckets (UTC hours). In a zone whose offset is not a whole number of
hour buckets (India +05:30, Nepal +05:45), a day starts at the bucket holding its midnight: set
``KPI_LONG_BUCKET`` to 30m or 15m there for exact local days.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

_DAYS_BACK = {"today": 0, "7d": 6, "30d": 29}
DAY_HORIZONS = tuple(_DAYS_BACK)  # every campaign has them; ``flight`` only a planned one
HORIZONS = (*DAY_HORIZONS, "flight")


class Span(NamedTuple):
    """Hour buckets starting in ``[first, last]`` (epoch ms)."""

    first: int
    last: int


class Horizons(NamedTuple):
    spans: dict[str, Span]  # by horizon; ``flight`` only once the flight has begun
    day_start_ms: int  # the campaign's last midnight (on the bucket grid: see ``midnight``)
    day_end_ms: int  # its next midnight
    flight_start_ms: int | None  # the midnight that starts the flight
    flight_end_ms: int | None  # the midnight after its last day


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_midnight_ms(day: date, zone: str) -> int:
    """The instant a calendar day begins in ``zone``."""
    return int(datetime.combine(day, time(0), tzinfo=_zone(zone)).timestamp() * 1000)


def local_date(now_ms: int, zone: str) -> date:
    return datetime.fromtimestamp(now_ms / 1000, tz=_zone(zone)).date()


@lru_cache(maxsize=4096)  # rows of one zone and flight share them within a bucket
def horizons(
    now_ms: int,
    zone: str,
    long_bucket_ms: int,
    flight_start: date | None = None,
    flight_end: date | None = None,
) -> Horizons:
    today = local_date(now_ms, zone)
    current = now_ms - now_ms % long_bucket_ms

    def midnight(day: date) -> int:
        """The start of the hour bucket holding ``day``'s midnight: the instant itself where the
        zone's offset is a whole number of buckets. Every boundary, the day's elapsed share
        included, is on the same grid, so pacing compares what is summed with its share."""
        instant = local_midnight_ms(day, zone)
        return instant - instant % long_bucket_ms

    spans = {
        name: Span(midnight(today - timedelta(days=back)), current)
        for name, back in _DAYS_BACK.items()
    }
    start_ms = end_ms = None
    if flight_end is not None:
        end_ms = midnight(flight_end + timedelta(days=1))
    if flight_start is not None:
        start_ms = midnight(flight_start)
        if flight_start <= today:
            # The flight's own days: after its end, nothing more counts in it.
            last = current if end_ms is None else min(current, end_ms - long_bucket_ms)
            spans["flight"] = Span(start_ms, last)
    return Horizons(spans, midnight(today), midnight(today + timedelta(days=1)), start_ms, end_ms)
