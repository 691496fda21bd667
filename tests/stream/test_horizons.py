"""The long horizons, pacing and the effective plan: pure, clock passed in."""

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.campaign import CampaignState
from stream.horizons import grid_problem, horizons, local_date, local_midnight_ms
from stream.pacing import pacing, share_elapsed
from stream.plans import Plan, channel_key, effective_plan, is_time_zone, main_channel

HOUR = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize(
    "now, zone, today, seven, thirty",
    [
        # UTC: days are UTC days.
        (
            "2026-06-10T15:20:00+00:00",
            "UTC",
            "2026-06-10T00:00+00:00",
            "2026-06-04T00:00+00:00",
            "2026-05-12T00:00+00:00",
        ),
        # Berlin in summer (+02:00): the local day began at 22:00 UTC the day before.
        (
            "2026-06-10T01:30:00+00:00",
            "Europe/Berlin",
            "2026-06-09T22:00+00:00",
            "2026-06-03T22:00+00:00",
            "2026-05-11T22:00+00:00",
        ),
        # New York (-04:00): still the 9th there at 02:00 UTC on the 10th.
        (
            "2026-06-10T02:00:00+00:00",
            "America/New_York",
            "2026-06-09T04:00+00:00",
            "2026-06-03T04:00+00:00",
            "2026-05-11T04:00+00:00",
        ),
        # Across the spring change in Berlin (29 March: 23 hours): 7d starts at +01:00 midnight.
        (
            "2026-03-30T12:00:00+00:00",
            "Europe/Berlin",
            "2026-03-29T22:00+00:00",
            "2026-03-23T23:00+00:00",
            "2026-02-28T23:00+00:00",
        ),
    ],
)
def test_horizons_are_calendar_days_in_the_zone(now, zone, today, seven, thirty):
    h = horizons(ms(now), zone, HOUR)
    current = ms(now) - ms(now) % HOUR
    assert h.spans["today"] == (ms(today), current)
    assert h.spans["7d"] == (ms(seven), current)
    assert h.spans["30d"] == (ms(thirty), current)
    assert "flight" not in h.spans


def test_a_dst_day_is_23_hours_long():
    h = horizons(ms("2026-03-29T12:00:00+00:00"), "Europe/Berlin", HOUR)
    assert h.day_end_ms - h.day_start_ms == 23 * HOUR


def test_a_half_hour_zone_is_exact_with_half_hour_buckets_and_starts_after_its_midnight_with_hours():
    now = ms("2026-06-10T12:00:00+00:00")
    midnight = ms("2026-06-09T18:30:00+00:00")  # Kolkata +05:30
    assert horizons(now, "Asia/Kolkata", HOUR // 2).spans["today"].first == midnight
    # Hour buckets do not fit the zone (the settings and the plan fold refuse it): the bucket
    # holding midnight started the day before and belongs to it alone.
    coarse = horizons(now, "Asia/Kolkata", HOUR)
    assert coarse.spans["today"].first == midnight + HOUR // 2
    assert coarse.day_start_ms == midnight


def test_the_flight_horizon_exists_once_the_flight_began():
    now = ms("2026-06-10T12:00:00+00:00")
    before = horizons(now, "UTC", HOUR, date(2026, 6, 11), date(2026, 6, 30))
    assert "flight" not in before.spans
    running = horizons(now, "UTC", HOUR, date(2026, 6, 1), date(2026, 6, 30))
    assert running.spans["flight"].first == ms("2026-06-01T00:00:00+00:00")
    assert running.flight_end_ms == ms("2026-07-01T00:00:00+00:00")


@given(
    st.integers(ms("2024-01-01T00:00:00+00:00"), ms("2030-01-01T00:00:00+00:00")),
    st.sampled_from(
        [
            "UTC",
            "Europe/Berlin",
            "America/Los_Angeles",
            "Australia/Lord_Howe",
            "Asia/Kathmandu",
            "Pacific/Chatham",
        ]
    ),
)
def test_horizons_nest_and_today_holds_now(now, zone):
    h = horizons(now, zone, 15 * 60_000)
    spans = h.spans
    assert spans["30d"].first <= spans["7d"].first <= spans["today"].first <= now
    assert h.day_start_ms <= now < h.day_end_ms
    assert 22 * HOUR <= h.day_end_ms - h.day_start_ms <= 26 * HOUR


def test_sums_between_are_exact_over_whole_hours():
    state = CampaignState(13)
    for hour in range(48):
        state.hours.add(1, hour * HOUR, 2_000_000, 6, HOUR)
    sums = state.hours.sums_between(10 * HOUR, 33 * HOUR, HOUR)
    assert sums.counts[1] == 24 and sums.spend_micros == 48_000_000
    assert state.hours.sums_between(100 * HOUR, 200 * HOUR, HOUR).counts == [0] * 5
    assert state.hours.sums_between(-5 * HOUR, 0, HOUR).counts[1] == 1


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 60), st.integers(0, 4), st.integers(0, 10**6)),
        st.tuples(st.just("read"), st.integers(0, 60), st.integers(0, 60), st.integers(0, 60)),
        st.tuples(st.just("drop"), st.integers(0, 60), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@given(_OPS)
def test_remembered_past_sums_equal_a_fresh_sum(ops):
    """What ``sums_between`` remembers of the sealed past is dropped by any late event, drop or
    change of the reader's current bucket: the result is always a fresh sum's."""
    rows = CampaignState(13).hours
    for op, a, b, c in ops:
        if op == "add":
            rows.add(b, a * HOUR, c, 6, HOUR)
        elif op == "drop":
            rows.drop_buckets_before(a * HOUR, HOUR)
        else:
            first, last, current = a * HOUR, max(a, b) * HOUR, c * HOUR
            assert rows.sums_between(first, last, HOUR, current) == rows.sums_between(
                first, last, HOUR
            )


def test_a_late_event_folded_after_a_read_counts_in_the_next_one():
    from stream.events import decode_message
    from stream.state import PartitionState
    from tests.factories import NOW_MS, event, kind, raw
    from tests.state_harness import CONFIG, RULES

    state = PartitionState(0, CONFIG)
    current = NOW_MS - NOW_MS % HOUR
    first = current - 5 * HOUR

    def fold(offset, at_ms):
        events, rejections = decode_message(
            raw(event("click", at_ms=at_ms)), kind("click"), NOW_MS, RULES
        )
        state.apply_message(kind("click"), offset, events, rejections, NOW_MS)

    fold(0, NOW_MS - 3 * HOUR)
    fold(1, NOW_MS - 1 * HOUR)  # the rows between exist from now on
    hours = state.campaigns["c1"].hours
    assert hours.sums_between(first, current, HOUR, current).counts[kind("click")] == 2
    fold(2, NOW_MS - 2 * HOUR)  # into the sealed past, through the fold's inlined path
    assert hours.sums_between(first, current, HOUR, current).counts[kind("click")] == 3


@pytest.mark.parametrize(
    "spend, budgets, share, used, pace, projected",
    [
        (250.0, {"daily": 1000.0}, 0.5, 0.25, 0.5, 500.0),
        (900.0, {"daily": 1000.0}, 0.5, 0.9, 1.8, 1800.0),
        (10.0, {"daily": 1000.0}, 0.0, 0.01, None, None),  # the day has just begun
        (10.0, {"total": 5000.0}, 0.5, None, None, 20.0),  # no daily budget
    ],
)
def test_daily_pacing(spend, budgets, share, used, pace, projected):
    p = pacing(spend, None, budgets, share, None)
    assert p.budget_used_ratio == used
    assert p.pacing_ratio == pace
    assert p.projected_spend == projected


def test_flight_pacing():
    p = pacing(0.0, 3000.0, {"total": 10_000.0}, 0.5, 0.25)
    assert p.flight_budget_used_ratio == 0.3
    assert p.flight_pacing_ratio == pytest.approx(1.2)


def test_share_elapsed_is_clamped():
    assert share_elapsed(5, 0, 10) == 0.5
    assert share_elapsed(-5, 0, 10) == 0.0 and share_elapsed(50, 0, 10) == 1.0


def test_local_midnight():
    assert local_midnight_ms(date(2026, 1, 1), "Asia/Tokyo") == ms("2025-12-31T15:00:00+00:00")
    assert datetime.fromtimestamp(0, UTC).year == 1970


def plan(**fields) -> Plan:
    base = {
        "campaign": None,
        "channel": None,
        "targets": {},
        "budgets": {},
        "flight_start": None,
        "flight_end": None,
        "timezone": None,
        "labels": {},
    }
    return Plan(**{**base, **fields})


def test_the_effective_plan_fills_a_campaigns_gaps_from_its_channel_default():
    plans = {
        "c1": plan(campaign="c1", targets={"cpa": 40.0}, labels={"owner": "anna"}),
        channel_key("search"): plan(
            channel="search",
            targets={"cpa": 60.0, "ctr": 0.03},
            budgets={"daily": 100.0},
            timezone="Europe/Berlin",
            labels={"owner": "ops", "team": "search"},
        ),
    }
    own = effective_plan(plans, "c1", "search")
    assert own.targets == {"cpa": 40.0, "ctr": 0.03}
    assert own.budgets == {"daily": 100.0} and own.timezone == "Europe/Berlin"
    assert own.labels == {"owner": "anna", "team": "search"}
    default_only = effective_plan(plans, "c2", "search")
    assert default_only.campaign == "c2" and default_only.targets["cpa"] == 60.0
    assert effective_plan(plans, "c3", "display") is None
    assert effective_plan(plans, "c1", None).targets == {"cpa": 40.0}


def test_main_channel_is_the_busiest_then_the_first_by_name():
    assert main_channel({"b": [1, 0, 0, 0, 0], "a": [0, 1, 0, 0, 0], "c": [0, 0, 0, 0, 0]}) == "a"
    assert main_channel({}) is None


def test_in_a_zone_off_the_grid_the_days_share_is_of_the_buckets_its_sum_holds():
    """Pacing compares the spend summed over the day's buckets with the share of the day those
    buckets make (else India would read 2.5 hours of spend against 3)."""
    now = ms("2026-06-10T21:30:00+00:00")  # 03:00 in Kolkata
    h = horizons(now, "Asia/Kolkata", HOUR)
    assert h.day_start_ms == ms("2026-06-10T18:30:00+00:00")  # the exact midnight
    assert h.day_first_ms == h.spans["today"].first == ms("2026-06-10T19:00:00+00:00")
    assert h.day_next_ms - h.day_first_ms == 24 * HOUR
    assert share_elapsed(now, h.day_first_ms, h.day_next_ms) == pytest.approx(2.5 / 24)


def test_the_flight_horizon_stops_at_its_last_day():
    now = ms("2026-07-05T12:00:00+00:00")
    ended = horizons(now, "UTC", HOUR, date(2026, 6, 1), date(2026, 6, 30))
    assert ended.spans["flight"] == (
        ms("2026-06-01T00:00:00+00:00"),
        ms("2026-06-30T23:00:00+00:00"),
    )


# -- day edges on the bucket grid: exact midnights, no bucket in two days ----------------------

MIN15 = 15 * 60_000
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Adelaide",
    "America/St_Johns",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
]
OFF_THE_HOUR = [z for z in ZONES if grid_problem(z, HOUR)]
INSTANTS = st.integers(ms("2024-01-01T00:00:00+00:00"), ms("2028-12-31T23:59:59+00:00"))


def begins_a_date(instant: int, zone: str) -> bool:
    """A local midnight: the wall clock reads 00:00 there, or (a change skipped midnight) the
    date changed at that very instant."""
    tz = ZoneInfo(zone)
    at = datetime.fromtimestamp(instant / 1000, tz)
    before = datetime.fromtimestamp((instant - 1) / 1000, tz)
    if before.date() >= at.date():
        return False
    return at.time() == time(0) or at.utcoffset() != before.utcoffset()


@settings(max_examples=300)
@given(INSTANTS, st.sampled_from(ZONES))
def test_the_days_edges_are_its_midnights_around_now(now, zone):
    h = horizons(now, zone, MIN15)
    assert h.day_start_ms <= now < h.day_end_ms
    assert begins_a_date(h.day_start_ms, zone) and begins_a_date(h.day_end_ms, zone)
    tz = ZoneInfo(zone)
    local_now = datetime.fromtimestamp(now / 1000, tz).date()
    assert datetime.fromtimestamp(h.day_start_ms / 1000, tz).date() == local_now
    assert datetime.fromtimestamp(h.day_end_ms / 1000, tz).date() == local_now + timedelta(1)


@settings(max_examples=300)
@given(INSTANTS, st.sampled_from(ZONES))
def test_on_a_grid_that_fits_the_days_are_exact_and_follow_each_other(now, zone):
    assert grid_problem(zone, MIN15) is None
    h = horizons(now, zone, MIN15)
    assert h.spans["today"] == (h.day_start_ms, now - now % MIN15)
    assert (h.day_first_ms, h.day_next_ms) == (h.day_start_ms, h.day_end_ms)
    before = horizons(h.day_start_ms - 1, zone, MIN15)
    assert before.day_end_ms == h.day_start_ms
    assert before.spans["today"].last + MIN15 == h.spans["today"].first  # no overlap, no gap
    assert h.spans["7d"].first == local_midnight_ms(local_date(now, zone) - timedelta(6), zone)
    after = horizons(h.day_end_ms, zone, MIN15)
    assert after.spans["today"].first == h.day_end_ms > h.spans["today"].last


@settings(max_examples=300)
@given(INSTANTS, st.sampled_from(OFF_THE_HOUR))
def test_off_the_grid_no_bucket_is_in_two_days(now, zone):
    h = horizons(now, zone, HOUR)
    today = h.spans["today"]
    before = horizons(h.day_start_ms - 1, zone, HOUR)
    after = horizons(h.day_end_ms, zone, HOUR)
    assert before.spans["today"].last < today.first  # the day before ends before today starts
    assert today.last < after.spans["today"].first
    assert (
        before.day_next_ms == h.day_first_ms == today.first and h.day_next_ms == after.day_first_ms
    )
    # Every bucket of the day starts within it; the span is empty before its first one starts.
    assert h.day_start_ms <= h.day_first_ms and h.day_next_ms - HOUR < h.day_end_ms
    assert today.last == now - now % HOUR
    assert (today.first <= today.last) == (today.first <= now)
    assert h.spans["7d"].first <= today.first and h.day_end_ms > now


def test_the_reviewers_half_hour_night_in_kolkata():
    """18:10:30Z is 23:40:30 in Kolkata: hour buckets there are refused, but were they used,
    the day is still the 24 buckets starting in it and it still ends at its midnight, ahead."""
    now = ms("2026-06-10T18:10:30+00:00")
    h = horizons(now, "Asia/Kolkata", HOUR)
    today = h.spans["today"]
    assert (today.last - today.first) // HOUR + 1 == 24
    assert h.day_end_ms == ms("2026-06-10T18:30:00+00:00") > now
    assert h.day_start_ms == ms("2026-06-09T18:30:00+00:00")
    assert share_elapsed(now, h.day_first_ms, h.day_next_ms) < 1.0


def test_a_day_whose_midnight_a_change_skips_begins_at_the_change():
    # Santiago springs forward at midnight: 6 September 2026 begins at 01:00 (-03), 04:00Z.
    start = local_midnight_ms(date(2026, 9, 6), "America/Santiago")
    assert start == ms("2026-09-06T04:00:00+00:00")
    h = horizons(ms("2026-09-06T03:59:59+00:00"), "America/Santiago", HOUR)
    assert h.day_end_ms == start and h.day_end_ms - h.day_start_ms == 24 * HOUR
    h = horizons(start, "America/Santiago", HOUR)
    assert h.day_start_ms == start and h.day_end_ms - start == 23 * HOUR


@pytest.mark.parametrize(
    "zone, bucket, fits",
    [
        ("Asia/Kolkata", HOUR, False),
        ("Asia/Kolkata", HOUR // 2, True),
        ("Asia/Kathmandu", HOUR // 2, False),
        ("Asia/Kathmandu", MIN15, True),
        ("Australia/Lord_Howe", HOUR, False),  # +10:30 in winter, +11:00 in summer
        ("Australia/Lord_Howe", HOUR // 2, True),
        ("Australia/Adelaide", HOUR, False),
        ("America/St_Johns", HOUR, False),
        ("Pacific/Chatham", HOUR // 2, False),
        ("Pacific/Chatham", MIN15, True),
        ("Europe/Berlin", HOUR, True),
        ("Europe/Berlin", 2 * HOUR, False),  # +01:00 in winter
        ("America/Santiago", HOUR, True),
        ("UTC", 24 * HOUR, True),
    ],
)
def test_a_zone_fits_the_grid_when_all_its_offsets_are_whole_buckets(zone, bucket, fits):
    assert (grid_problem(zone, bucket) is None) is fits


@pytest.mark.parametrize(
    "zone, bucket, says",
    [
        (
            "Asia/Kolkata",
            HOUR,
            "timezone Asia/Kolkata is UTC+05:30, not a whole number of KPI_LONG_BUCKET buckets "
            "(1h): its days would not start on a bucket; run the workers with "
            "KPI_LONG_BUCKET=30m (or 15m)",
        ),
        ("Asia/Kathmandu", HOUR, "is UTC+05:45, .* KPI_LONG_BUCKET=15m"),
        (
            "Australia/Lord_Howe",
            HOUR,
            "is UTC+10:30 part of the year, .* KPI_LONG_BUCKET=30m (or 15m)",
        ),
        ("America/St_Johns", HOUR, "is UTC-03:30 and UTC-02:30, .* KPI_LONG_BUCKET=30m (or 15m)"),
        (
            "Europe/Berlin",
            2 * HOUR,
            "is UTC+01:00 part of the year, .* KPI_LONG_BUCKET=1h (or 30m)",
        ),
    ],
)
def test_a_zone_off_the_grid_says_which_bucket_fits(zone, bucket, says):
    pattern = ".*".join(re.escape(part) for part in says.split(" .* "))
    assert re.fullmatch(
        f"(timezone {re.escape(zone)} )?{pattern}", grid_problem(zone, bucket) or ""
    )


def test_grid_problem_never_raises():
    for zone in sorted(available_timezones()):
        if is_time_zone(zone):
            for bucket in (HOUR, HOUR // 2, MIN15):
                problem = grid_problem(zone, bucket)
                assert problem is None or "KPI_LONG_BUCKET=" in problem
    for name in ("", "Europe", "../etc/passwd", "x" * 300, "UTC\x00"):
        assert "not an IANA time zone" in (grid_problem(name, HOUR) or "")
