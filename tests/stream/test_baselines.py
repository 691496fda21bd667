"""A campaign's own normal (stream.baselines): spans, medians, cold starts, and the figure the
rows carry, against an oracle that sums the events themselves."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import baselines as b
from stream.campaign import WindowTotals
from stream.events import decode_message
from stream.horizons import Span
from stream.snapshot import build_rows
from stream.state import PartitionState
from tests.factories import event, kind, raw
from tests.state_harness import CONFIG, RULES

HOUR = 3_600_000
WEEK = 7 * 24 * HOUR
NOW = 1_790_000_040_000 - 1_790_000_040_000 % HOUR + 20 * 60_000  # 20 past an hour


def ref(kpi="ctr", window_ms=HOUR, **baseline) -> b.BaselineRef:
    parsed = b.parse_baseline(baseline or {"same_hour_of_week": "4w"})
    return b.BaselineRef(kpi, f"{window_ms // HOUR}h", window_ms, parsed)


@pytest.mark.parametrize(
    "raw_baseline, label",
    [
        ({"same_hour_of_week": "4w"}, "same_hour_of_week_4w"),
        ({"same_hour_of_week": "1w"}, "same_hour_of_week_1w"),
        ({"same_hour_of_week": "14d"}, "same_hour_of_week_2w"),
        ({"trailing": "7d"}, "trailing_7d"),
        ({"trailing": "2w"}, "trailing_14d"),
    ],
)
def test_baselines_parse_to_their_labels(raw_baseline, label):
    assert b.parse_baseline(raw_baseline).label == label


@pytest.mark.parametrize(
    "raw_baseline, says",
    [
        ({"same_hour_of_week": "5w"}, "1w to 4w"),
        ({"same_hour_of_week": "10d"}, "1w to 4w"),
        ({"trailing": "30d"}, "1d to 28d"),
        ({"trailing": "12h"}, "whole number"),
        ({"median": "4w"}, "one of"),
        ({"trailing": "7d", "same_hour_of_week": "4w"}, "one of"),
        ("4w", "one of"),
    ],
)
def test_a_wrong_baseline_says_why(raw_baseline, says):
    with pytest.raises(b.BaselineError, match=says):
        b.parse_baseline(raw_baseline)


def test_same_hour_of_week_reads_the_window_in_each_past_week_at_the_nearest_hour():
    # 10:20 rounds to 10:00: the hour 9:00-10:00 of each past week.
    spans = b.spans(ref(), NOW, HOUR)
    end = NOW - 20 * 60_000
    assert spans == tuple(Span(end - k * WEEK - HOUR, end - k * WEEK - HOUR) for k in (1, 2, 3, 4))
    # 10:40 rounds to 11:00: the hour 10:00-11:00, the one the window mostly covers.
    later = b.spans(ref(window_ms=2 * HOUR), NOW + 20 * 60_000, HOUR)
    assert later[0] == Span(end + HOUR - WEEK - 2 * HOUR, end - WEEK)


def test_trailing_reads_the_days_before_the_window():
    (span,) = b.spans(ref(trailing="7d"), NOW, HOUR)
    end = NOW - 20 * 60_000
    assert span == Span(end - HOUR - 7 * 24 * HOUR, end - 2 * HOUR)
    assert (span.last - span.first) // HOUR + 1 == 7 * 24


def sums(impressions: int, clicks: int) -> WindowTotals:
    return WindowTotals([impressions, clicks, 0, 0, 0], 0, 0)


@pytest.mark.parametrize(
    "weeks, covered, expected",
    [
        ([sums(100, 2), sums(100, 4), sums(100, 6), sums(100, 8)], [True] * 4, 0.05),
        ([sums(100, 2), sums(100, 4), sums(100, 9), sums(0, 0)], [True] * 4, 0.04),
        # Two weeks with a value of four: not enough for a median (cold start).
        ([sums(100, 2), sums(100, 4), sums(0, 0), sums(0, 0)], [True] * 4, None),
        # A week before the campaign's history began does not count, even with sums.
        ([sums(100, 2), sums(100, 4), sums(100, 6), sums(100, 8)], [1, 1, 0, 0], None),
        ([sums(100, 2), sums(100, 4), sums(100, 6), sums(100, 8)], [1, 1, 1, 0], 0.04),
    ],
)
def test_the_median_needs_more_than_half_of_the_weeks(weeks, covered, expected):
    value = b.value(ref(), weeks, [bool(c) for c in covered])
    assert value == (None if expected is None else pytest.approx(expected))


def test_a_trailing_baseline_needs_history_reaching_its_start():
    trailing = ref(trailing="7d")
    assert b.value(trailing, [sums(1000, 30)], [True]) == pytest.approx(0.03)
    assert b.value(trailing, [sums(1000, 30)], [False]) is None
    assert b.value(trailing, [sums(0, 0)], [True]) is None  # no impressions: no CTR
    spend = b.BaselineRef("spend", "1h", HOUR, b.parse_baseline({"trailing": "1d"}))
    assert b.value(spend, [WindowTotals([0] * 5, 0, 0)], [True]) == 0.0  # no spend is a value


# -- the rows' figure against an oracle over the events ----------------------------------------

REFS = (
    ref(),
    ref(window_ms=2 * HOUR, same_hour_of_week="2w"),
    ref(trailing="3d"),
    b.BaselineRef("clicks", "1h", HOUR, b.parse_baseline({"same_hour_of_week": "3w"})),
)
# Traffic in the hours around the judged one, week after week (so that medians of 3 and 4 weeks
# are common), and anywhere in the month kept.
near = st.tuples(st.integers(0, 4), st.integers(-3, 3))  # (weeks back, hours from the hour)
anywhere = st.tuples(st.just(0), st.integers(-29 * 24, 0))
slot_traffic = st.tuples(st.integers(1, 3), st.integers(0, 3), st.integers(0, 1))
traffic = st.lists(st.tuples(st.one_of(near, anywhere), slot_traffic), max_size=40)


def fold(states: list[PartitionState], events: list[tuple[int, str]], now: int) -> None:
    for offset, (at, event_type) in enumerate(events):
        state = states[offset % len(states)]  # a campaign split over partitions merges exactly
        message = raw(event(event_type, at_ms=at, campaign="c1"))
        decoded, rejections = decode_message(message, kind(event_type), now, RULES)
        state.apply_message(kind(event_type), offset, decoded, rejections, now)


def oracle(r: b.BaselineRef, events: list[tuple[int, str]], now: int) -> float | None:
    """Sums of the events themselves, by the definition in stream.baselines' docstring."""
    end = (now + HOUR // 2) // HOUR * HOUR  # the nearest hour, half up (round() is to even)
    first = min(at - at % HOUR for at, _ in events) if events else None
    if r.baseline.method == "trailing":
        windows = [(end - r.window_ms - r.baseline.span_ms, end - r.window_ms)]
    else:
        weeks = range(1, r.baseline.weeks + 1)
        windows = [(end - k * WEEK - r.window_ms, end - k * WEEK) for k in weeks]
    values = []
    for lo, hi in windows:
        if first is None or first > lo:
            continue  # the history does not reach it
        inside = [t for at, t in events if lo <= at < hi]
        impressions, clicks = inside.count("impression"), inside.count("click")
        if r.kpi == "clicks":
            values.append(float(clicks))
        elif impressions:
            values.append(clicks / impressions)
    if r.baseline.method == "trailing":
        return values[0] if values else None
    return statistics.median(values) if len(values) > r.baseline.weeks // 2 else None


@settings(max_examples=60, deadline=None)
@given(traffic, st.integers(0, 59).map(lambda m: m * 60_000 + 7), st.sampled_from([1, 2]))
def test_the_rows_baselines_are_the_oracles(hours, minute, partitions):
    now = NOW - NOW % HOUR + minute
    events = []
    end = round(now / HOUR) * HOUR
    for (weeks, hours_from), (impressions, clicks, extra) in hours:
        start = end - weeks * WEEK + hours_from * HOUR - HOUR
        at = start + (weeks * 7919 + hours_from * 104_729) % HOUR  # somewhere in that hour
        if not now - 29 * 24 * HOUR <= at <= now:
            continue
        events += [(at, "impression")] * impressions + [(at, "click")] * min(clicks, impressions)
        events += [(at, "sale")] * extra  # read by no baseline here
    states = [PartitionState(p, CONFIG) for p in range(partitions)]
    fold(states, events, now)
    rows = list(build_rows(states, now, CONFIG.bucket_ms, (HOUR,), baselines=REFS))
    got = rows[0].baselines() if rows else {}
    for r in REFS:
        expected = oracle(r, events, now - now % CONFIG.bucket_ms)
        value = got.get(r.key)
        assert value == (None if expected is None else pytest.approx(expected)), r.key


# -- the campaign's own weeks: the same wall-clock hours, across daylight-saving changes -------


def utc(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_same_hour_of_week_compares_the_same_local_hour_across_the_spring_change():
    # Sunday 5 April 2026, 02:20 in Berlin (+02:00): the hour judged is 01:00-02:00 local. A week
    # before, on the night of the change (29 March, +01:00 until 02:00), that hour began at 00:00Z.
    now = utc("2026-04-05T02:20:00+02:00")
    end = utc("2026-04-05T02:00:00+02:00")
    local = b.spans(ref(), now, HOUR, "Europe/Berlin")
    assert local[0] == Span(utc("2026-03-29T01:00:00+01:00"), utc("2026-03-29T01:00:00+01:00"))
    assert end - (local[0].last + HOUR) == WEEK - HOUR  # not a UTC week: an hour shorter
    assert [end - (s.last + HOUR) for s in local[1:]] == [k * WEEK - HOUR for k in (2, 3, 4)]
    # In UTC (a campaign in KPI_TIMEZONE=UTC): whole weeks, as before.
    assert b.spans(ref(), now, HOUR) == b.spans(ref(), now, HOUR, "UTC")
    assert [end - (s.last + HOUR) for s in b.spans(ref(), now, HOUR)] == [
        k * WEEK for k in (1, 2, 3, 4)
    ]


def test_same_hour_of_week_compares_the_same_local_hours_across_the_autumn_change():
    now = utc("2026-10-27T12:00:00+01:00")  # a Tuesday after Berlin fell back
    spans = b.spans(ref(window_ms=3 * HOUR), now, HOUR, "Europe/Berlin")
    assert spans[0] == Span(utc("2026-10-20T09:00:00+02:00"), utc("2026-10-20T11:00:00+02:00"))
    assert now - (spans[0].last + HOUR) == WEEK + HOUR


@settings(max_examples=200, deadline=None)
@given(
    st.integers(utc("2024-01-01T00:00:00+00:00"), utc("2028-12-31T00:00:00+00:00")),
    st.sampled_from(
        ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
    ),
    st.sampled_from([1, 2, 3]),
)
def test_each_week_back_ends_at_the_same_wall_clock_time(now, zone, hours):
    bucket = HOUR // 2  # fits Lord Howe's +10:30
    r = ref(window_ms=hours * HOUR, same_hour_of_week="4w")
    tz = ZoneInfo(zone)
    end = b.nearest_boundary(now, bucket)
    wall = datetime.fromtimestamp(end / 1000, tz)
    for k, span in enumerate(b.spans(r, now, bucket, zone), 1):
        assert span.last - span.first == hours * HOUR - bucket
        then = datetime.fromtimestamp((span.last + bucket) / 1000, tz)
        expected = (wall.replace(tzinfo=None) - timedelta(days=7 * k)).replace(tzinfo=tz)
        if datetime.fromtimestamp(expected.timestamp(), tz).replace(tzinfo=None) == (
            expected.replace(tzinfo=None)
        ):  # that wall-clock time existed: the week back ends at it
            assert then.replace(tzinfo=None) == expected.replace(tzinfo=None)
            assert then.weekday() == wall.weekday()
        assert abs((end - (span.last + bucket)) - k * WEEK) <= HOUR


def test_the_rows_baseline_reads_the_campaigns_local_week():
    """A campaign in Berlin (KPI_TIMEZONE): its clicks of 01:00-02:00 local on the night of the
    spring change are the baseline of 01:00-02:00 a week later, an hour less than a UTC week."""
    now = utc("2026-04-05T02:20:00+02:00")
    at = utc("2026-03-29T01:30:00+01:00")
    clicks = b.BaselineRef("clicks", "1h", HOUR, b.parse_baseline({"same_hour_of_week": "1w"}))
    state = PartitionState(0, CONFIG)
    fold([state], [(at, "impression"), (at, "click"), (at, "click")], now)
    (berlin,) = build_rows(
        [state], now, CONFIG.bucket_ms, (HOUR,), zone="Europe/Berlin", baselines=(clicks,)
    )
    assert berlin.baselines()[clicks.key] == 2.0
    assert berlin.day_start_ms == utc("2026-04-05T00:00:00+02:00")
    (in_utc,) = build_rows([state], now, CONFIG.bucket_ms, (HOUR,), baselines=(clicks,))
    assert in_utc.baselines()[clicks.key] is None  # a UTC week back is before its history
