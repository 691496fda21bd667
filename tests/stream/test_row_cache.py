"""Rows from the cache (the exporter's and the backtest's ``RowCache``, which carries a row to a
later bucket of the same hour when nothing it sums moved) equal rows built afresh, whatever the
events, plans and clock steps: field by field, and as exposition text."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.pipeline import Message, Pipeline
from stream import exposition
from stream.baselines import BaselineRef, parse_baseline
from stream.events import EVENT_TYPES
from stream.settings import Settings
from stream.snapshot import CampaignRow, RowCache, build_rows
from tests.factories import NOW_MS

MIN = 60_000
# Hour buckets of 30 minutes: the Kolkata plan (+05:30) needs them (a 1h grid refuses it).
SETTINGS = Settings(partitions=2, long_bucket_seconds=1800)
WINDOWS_MS = tuple(sorted(w * 1000 for w in SETTINGS.windows_seconds))
BASELINES = (
    BaselineRef("ctr", "1h", 3_600_000, parse_baseline({"trailing": "1d"})),
    BaselineRef("ctr", "1h", 3_600_000, parse_baseline({"same_hour_of_week": "1w"})),
)
TOPICS = dict(zip(EVENT_TYPES, SETTINGS.topics.inputs()))
START = NOW_MS - NOW_MS % 3_600_000 - 2 * 3_600_000  # on an hour: crossings come early
PLANS = [
    {
        "campaign_id": "a",
        "targets": {"ctr": 0.05},
        "budget": {"daily": 10},
        "timezone": "Asia/Kolkata",
    },  # a day that ends at :30
    {
        "campaign_id": "b",
        "budget": {"daily": 5, "total": 50},
        "timezone": "America/New_York",
        "flight": {"start": "2026-09-20", "end": "2026-09-21"},
    },
    {"channel": "search", "targets": {"cpa": 20}, "labels": {"owner": "sem"}},
]

step = st.tuples(
    st.integers(0, 95),  # minutes the clock moves (0: a second look within the bucket)
    st.lists(
        st.tuples(
            st.sampled_from(EVENT_TYPES),
            st.sampled_from(["a", "b", "c"]),
            st.one_of(
                st.integers(-70, 3),  # minutes from the clock (a few into the future)
                st.integers(-26 * 60, -60),  # the hours a baseline reads
            ),
            st.integers(0, 3),  # lead number
        ),
        max_size=6,
    ),
)


def _comparable(row: CampaignRow) -> dict:
    return {
        "campaign": row.campaign,
        "windows": [
            (w.window_ms, w.counts, w.revenue_micros, w.spend_micros, w.sketch, w.p50_ms, w.p95_ms)
            for w in row.windows
        ],
        "by_channel": row.by_channel,
        "histogram": (row.histogram, row.histogram_sum_ms),
        "awaiting": (row.awaiting, row.oldest_awaiting_ms, row.unmatched),
        "horizons": row.horizons,
        "plan": row.plan,
        "clock": (
            row.day_share,
            row.flight_share,
            row.day_elapsed_s,
            row.day_end_ms,
            row.outside_flight,
        ),
        "baselines": row.baselines(),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=25))
def test_cached_rows_equal_fresh_rows(steps):
    check(steps)


@pytest.mark.parametrize(
    ("steps", "baselines"),
    [
        # The baselines' spans end at the nearest hour: they move at :30, within the hour.
        (
            [
                (0, [("impression", "a", -25 * 60, 0), ("click", "a", -25 * 60, 0)]),
                (0, [("impression", "a", -24 * 60 - 30, 0), ("impression", "a", -2, 0)]),
                (20, []),  # the last impression has left 5m and 15m, and stays in 1h
                (15, []),
            ],
            BASELINES,
        ),
        # A day that ends at :30 (Asia/Kolkata), between two looks of the same hour (no
        # baseline read: its spans move at :30 too).
        ([(0, [("impression", "a", -1, 0)]), (6 * 60 + 20, []), (15, [])], ()),
        # An accepted future event enters the windows when its minute comes.
        ([(0, [("click", "c", 3, 0)]), (1, []), (3, [])], BASELINES),
    ],
    ids=["baseline-half-hour", "day-end-at-half-hour", "future-event"],
)
def test_cached_rows_equal_fresh_rows_at_the_edges(steps, baselines):
    check(steps, baselines)


def check(steps: list, baselines: tuple[BaselineRef, ...] = BASELINES) -> None:
    now = {"ms": START}
    pipeline = Pipeline(SETTINGS, lambda: now["ms"])
    pipeline.assign(range(SETTINGS.partitions), [])
    plans = [
        Message(SETTINGS.topics.plans, p, i, orjson.dumps(plan), START, _key(plan))
        for p in range(SETTINGS.partitions)
        for i, plan in enumerate(PLANS)
    ]
    pipeline.process(plans)
    cache = RowCache()
    offsets: dict[tuple[str, int], int] = {}
    serial = 0
    for minutes, events in steps:
        now["ms"] += minutes * MIN + (7_000 if minutes == 0 else 0)
        batch = []
        for event_type, campaign, offset_min, lead in events:
            serial += 1
            body = {
                "event_id": f"e{serial}",
                "event_type": event_type,
                "occurred_at": now["ms"] + offset_min * MIN,
                "campaign_id": campaign,
                "channel": "search" if campaign != "c" else "display",
            }
            if event_type in ("impression", "click"):
                body["cost"] = 0.5
            if event_type in ("lead", "sales_contact", "sale"):
                body["lead_id"] = f"{campaign}-{lead}"
            if event_type == "sale":
                body.update(value=12.5, currency="USD")
            topic = TOPICS[event_type]
            partition = 0 if campaign != "b" else 1
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            batch.append(Message(topic, partition, offset, orjson.dumps(body), now["ms"]))
        pipeline.process(batch)
        states = list(pipeline.states.values())
        args = (states, now["ms"], SETTINGS.bucket_seconds * 1000, WINDOWS_MS)
        cached = list(build_rows(*args, cache, "UTC", baselines))
        fresh = list(build_rows(*args, None, "UTC", baselines))
        at = datetime.fromtimestamp(now["ms"] / 1000, UTC)
        assert [_comparable(r) for r in cached] == [_comparable(r) for r in fresh], at
        labels = exposition.window_labels(WINDOWS_MS)
        for export in ("lean", "full"):
            assert [exposition.render_row(r, export, labels) for r in cached] == [
                exposition.render_row(r, export, labels) for r in fresh
            ]


def test_a_quiet_campaign_is_carried_not_rebuilt():
    """The point of carrying: a campaign whose windows did not move costs no rebuild."""
    now = {"ms": START + 10 * MIN}
    pipeline = Pipeline(SETTINGS, lambda: now["ms"])
    pipeline.assign(range(SETTINGS.partitions), [])
    body = {
        "event_id": "x",
        "event_type": "impression",
        "occurred_at": now["ms"],
        "campaign_id": "a",
    }
    pipeline.process([Message(TOPICS["impression"], 0, 0, orjson.dumps(body), now["ms"])])
    cache = RowCache()
    states = list(pipeline.states.values())
    for minute in range(4):  # inside the 5-minute window: nothing leaves it
        list(build_rows(states, now["ms"] + minute * MIN, MIN, WINDOWS_MS, cache))
    assert (cache.misses, cache.carries) == (4, 3)
    list(build_rows(states, now["ms"] + 5 * MIN, MIN, WINDOWS_MS, cache))  # it left 5m
    assert cache.carries == 3


def test_a_carried_row_is_a_copy_the_earlier_reader_keeps():
    """A decision round or a page may still read the row it was given when the next bucket's
    build carries it: that row keeps its own clock."""
    now = START + 10 * MIN
    pipeline = Pipeline(SETTINGS, lambda: now)
    pipeline.assign(range(SETTINGS.partitions), [])
    plans = [Message(SETTINGS.topics.plans, 0, 0, orjson.dumps(PLANS[0]), now, _key(PLANS[0]))]
    body = {"event_id": "x", "event_type": "impression", "occurred_at": now, "campaign_id": "a"}
    pipeline.process([*plans, Message(TOPICS["impression"], 0, 0, orjson.dumps(body), now)])
    cache = RowCache()
    states = list(pipeline.states.values())
    (first,) = build_rows(states, now, MIN, WINDOWS_MS, cache)
    elapsed = first.day_elapsed_s
    (second,) = build_rows(states, now + MIN, MIN, WINDOWS_MS, cache)
    assert cache.carries == 1 and second is not first
    assert first.day_elapsed_s == elapsed and second.day_elapsed_s == elapsed + 60
    assert second.windows is first.windows  # the sums are shared, not rebuilt


def _key(plan: dict) -> bytes:
    return (plan["campaign_id"] if "campaign_id" in plan else "\x00" + plan["channel"]).encode()
