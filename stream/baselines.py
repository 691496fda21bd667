"""A campaign's own normal for a KPI: the baselines that rules compare today's figure with.

Pure: a clock, the hour buckets' sums and which spans the campaign's history covers in; a
number, or None when there is no baseline yet (a cold start: the rule does not judge).

Two kinds, both over whole hour buckets (the long horizons' ``BucketRows``):

* ``same_hour_of_week: 4w``: for each of the last N weeks, the KPI over the same hours of the
  week as the window being judged, and their median. The window ends at the bucket boundary
  nearest to ``now``; its k-th week back is the window's length of whole buckets ending at the
  same wall-clock time k*7 calendar days earlier in the campaign's time zone (not k*7*24 hours:
  across a daylight-saving change 3 a.m. stays 3 a.m.). Traffic's daily and weekly cycle is in
  it: 3 a.m. on a Sunday is compared with 3 a.m. on past Sundays, as the campaign's audience
  lives them. A week counts only where the KPI has a value there (a ratio with no denominator
  has none) and the campaign's history reaches back to it; the median needs more than half of
  the N weeks (``min_weeks``).
* ``trailing: 7d``: the KPI over the D days of hours before the judged window, once the
  campaign's history reaches back that far.

Exact: integer sums of buckets, so the same figure in the worker and in ``/metrics``
(``kpi_baseline``), which Prometheus and Grafana compare with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from statistics import median
from zoneinfo import ZoneInfo

from .campaign import WindowTotals
from .events import EVENT_TYPES, MICROS
from .horizons import Span
from .kpis import RATIO_BY_KEY, ratio, source_value

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
METHODS = ("same_hour_of_week", "trailing")
# KPIs a baseline can be taken of: sums over buckets (not quantiles or budget figures).
BASELINE_KPIS = frozenset({*RATIO_BY_KEY, "revenue", "spend", *(f"{t}s" for t in EVENT_TYPES)})
_SPAN = re.compile(r"^\s*(\d+)\s*([wd])\s*$")


class BaselineError(ValueError):
    pass


@dataclass(frozen=True)
class Baseline:
    method: str  # one of METHODS
    span_ms: int  # N weeks (same_hour_of_week) or D days (trailing)

    @property
    def weeks(self) -> int:
        return self.span_ms // WEEK_MS

    @property
    def min_weeks(self) -> int:
        """Weeks with a value that a same-hour-of-week median needs: more than half."""
        return self.weeks // 2 + 1

    @cached_property  # read per campaign per round
    def label(self) -> str:
        """The ``baseline`` label of ``kpi_baseline``: ``same_hour_of_week_4w``, ``trailing_7d``."""
        if self.method == "same_hour_of_week":
            return f"{self.method}_{self.weeks}w"
        return f"{self.method}_{self.span_ms // DAY_MS}d"


@dataclass(frozen=True)
class BaselineRef:
    """A baseline that a rule reads: of ``kpi`` over the trailing ``window``."""

    kpi: str
    window: str  # the window label ("1h")
    window_ms: int
    baseline: Baseline

    @cached_property
    def key(self) -> tuple[str, str, str]:
        return (self.kpi, self.window, self.baseline.label)


def parse_baseline(raw: object) -> Baseline:
    """``{same_hour_of_week: 4w}`` or ``{trailing: 7d}``; raises BaselineError saying why."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise BaselineError("one of {same_hour_of_week: 4w} or {trailing: 7d}")
    ((method, span),) = raw.items()
    if method not in METHODS:
        raise BaselineError(f"one of {METHODS}, got {method!r}")
    match = _SPAN.match(str(span))
    if not match:
        raise BaselineError(f"{method}: a whole number of weeks (4w) or days (28d), got {span!r}")
    number, unit = int(match.group(1)), match.group(2)
    span_ms = number * (WEEK_MS if unit == "w" else DAY_MS)
    if method == "same_hour_of_week":
        if span_ms % WEEK_MS or not 1 <= span_ms // WEEK_MS <= 4:
            raise BaselineError(f"same_hour_of_week: 1w to 4w, got {span!r}")
    elif not DAY_MS <= span_ms <= 28 * DAY_MS:
        raise BaselineError(f"trailing: 1d to 28d, got {span!r}")
    return Baseline(method, span_ms)


def check_window(baseline: Baseline, window_ms: int | None, long_bucket_ms: int = HOUR_MS) -> None:
    """A baseline is of a trailing window of whole long buckets, up to a day."""
    if window_ms is None or window_ms % long_bucket_ms or not 0 < window_ms <= DAY_MS:
        raise BaselineError(
            "a baseline compares a trailing window of whole hours up to 1d "
            "(the long horizons have their own horizon)"
        )


def nearest_boundary(now_ms: int, long_bucket_ms: int) -> int:
    """The long-bucket boundary nearest ``now_ms``: where the baselines' spans end."""
    return (now_ms + long_bucket_ms // 2) // long_bucket_ms * long_bucket_ms


def spans(
    ref: BaselineRef, now_ms: int, long_bucket_ms: int, zone: str = "UTC"
) -> tuple[Span, ...]:
    """The spans of long buckets (bucket starts, inclusive) whose KPI makes the baseline;
    ``zone`` is the campaign's time zone, whose weeks ``same_hour_of_week`` compares."""
    end = nearest_boundary(now_ms, long_bucket_ms)
    b = ref.baseline
    if b.method == "same_hour_of_week":
        ends = (weeks_back(end, k, zone, long_bucket_ms) for k in range(1, b.weeks + 1))
        return tuple(Span(e - ref.window_ms, e - long_bucket_ms) for e in ends)
    last = end - ref.window_ms - long_bucket_ms
    return (Span(last - b.span_ms + long_bucket_ms, last),)


@lru_cache(maxsize=4096)  # every row of a zone reads the same ends within a bucket
def weeks_back(end_ms: int, weeks: int, zone: str, long_bucket_ms: int) -> int:
    """The instant ``zone``'s wall clock read what it reads at ``end_ms``, ``weeks`` * 7 calendar
    days earlier, on the bucket grid. Where that time did not exist (a spring-forward gap), the
    instant the clock passed it; where it occurred twice (a fall-back), the first: a window
    ending there covers the wall-clock hours before it."""
    tz = ZoneInfo(zone)
    wall = datetime.fromtimestamp(end_ms / 1000, tz).replace(tzinfo=None, fold=0)
    then = (wall - timedelta(days=7 * weeks)).replace(tzinfo=tz)  # fold 0: see above
    return nearest_boundary(int(then.timestamp() * 1000), long_bucket_ms)


def kpi_of(kpi: str, sums: WindowTotals) -> float | None:
    """The KPI over summed buckets, as the worker exports it for a window."""
    counts, revenue, spend = sums.counts, sums.revenue_micros, sums.spend_micros
    if kpi in RATIO_BY_KEY:
        r = RATIO_BY_KEY[kpi]
        return ratio(
            source_value(r.numerator, counts, revenue, spend),
            source_value(r.denominator, counts, revenue, spend),
        )
    if kpi == "revenue":
        return revenue / MICROS
    if kpi == "spend":
        return spend / MICROS
    return float(counts[EVENT_TYPES.index(kpi[:-1])])


def value(ref: BaselineRef, sums: Sequence[WindowTotals], covered: Sequence[bool]) -> float | None:
    """The baseline from each span's sums and whether the history reaches that span."""
    values = [kpi_of(ref.kpi, s) for s, c in zip(sums, covered) if c]
    known = [v for v in values if v is not None]
    if ref.baseline.method == "trailing":
        return known[0] if known else None
    if len(known) < ref.baseline.min_weeks:
        return None
    return float(median(known))


def add_sums(a: WindowTotals, b: WindowTotals) -> WindowTotals:
    return WindowTotals(
        [x + y for x, y in zip(a.counts, b.counts)],
        a.revenue_micros + b.revenue_micros,
        a.spend_micros + b.spend_micros,
    )
