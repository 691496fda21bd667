"""One campaign's recent history as a time series, for the live page's charts: its minute buckets
over the last hour and its hour buckets since the start of its day, summed over the partitions
that hold it. Pure: partition states and a clock in, plain data out."""

from __future__ import annotations

from collections.abc import Iterable

from .campaign import KINDS, REVENUE, SPEND, BucketRows
from .state import PartitionState

POINT_FIELDS = (
    "start_ms",
    "impressions",
    "clicks",
    "leads",
    "sales",
    "contacts",
    "spend",
    "revenue",
)


def series(
    rows: Iterable[BucketRows], first_ms: int, last_ms: int, bucket_ms: int
) -> list[list[float]]:
    """A point per bucket starting in ``[first_ms, last_ms]`` (gaps as zeros): the bucket's
    start, its counts by kind, spend and revenue (in currency units), summed over ``rows``."""
    sources = list(rows)
    out = []
    for start in range(first_ms, last_ms + 1, bucket_ms):
        point = [0] * (KINDS + 2)
        for source in sources:
            row = source.row_values(start, bucket_ms)
            if row is not None:
                for i in range(KINDS + 2):
                    point[i] += row[i]
        out.append([start, *point[:KINDS], point[SPEND] / 1_000_000, point[REVENUE] / 1_000_000])
    return out


def campaign_series(
    states: Iterable[PartitionState],
    campaign: str,
    now_ms: int,
    minutes: int = 60,
    day_start_ms: int | None = None,
) -> dict:
    """The last ``minutes`` minute buckets (the current one last) and the hour buckets from
    ``day_start_ms`` (the campaign's midnight; default: 24 hours back) to now."""
    held = [s for s in states if campaign in s.campaigns]
    if not held:
        return {"fields": list(POINT_FIELDS), "minutes": [], "hours": []}
    bucket_ms = held[0].config.bucket_ms
    long_ms = held[0].config.long_bucket_ms
    current = now_ms - now_ms % bucket_ms
    hour = now_ms - now_ms % long_ms
    first_hour = (
        # A bucket belongs to the day it starts in (``stream.horizons``): the first at or after
        # the midnight.
        hour - 23 * long_ms if day_start_ms is None else -(-day_start_ms // long_ms) * long_ms
    )
    campaigns = [s.campaigns[campaign] for s in held]
    return {
        "fields": list(POINT_FIELDS),
        "bucket_ms": bucket_ms,
        "minutes": series(campaigns, current - (minutes - 1) * bucket_ms, current, bucket_ms),
        "hour_ms": long_ms,
        "hours": series((c.hours for c in campaigns), first_hour, hour, long_ms),
    }
