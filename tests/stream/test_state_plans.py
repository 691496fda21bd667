"""Plans folded into the partition state: in force, replaced, removed, refused, restored."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from stream import changelog
from stream.events import decode_message
from stream.plans import Plan, plan_key
from stream.snapshot import campaign_row
from stream.state import KINDS, PLANS, PartitionState
from tests.factories import event, kind, raw
from tests.state_harness import CONFIG, RULES, as_messages, canonical, restore, run


def plan(campaign="c1", **fields) -> bytes:
    return orjson.dumps({"campaign_id": campaign, **fields})


def fold_plans(state: PartitionState, records: list[tuple[bytes | None, bytes | None]], start=0):
    refused = []
    for offset, (key, value) in enumerate(records, start):
        rejection = state.apply_plan(offset, key, value)
        if rejection is not None:
            refused.append(rejection)
    return refused


def test_a_plan_is_in_force_and_the_latest_record_of_its_key_wins():
    state = PartitionState(0, CONFIG)
    fold_plans(
        state,
        [
            (b"c1", plan(targets={"cpa": 40})),
            (b"c2", plan("c2", budget={"daily": 100})),
            (b"c1", plan(targets={"cpa": 35}, timezone="Europe/Berlin")),
        ],
    )
    assert state.plans["c1"].targets == {"cpa": 35.0}
    assert state.plans["c1"].timezone == "Europe/Berlin"
    assert state.plans["c2"].budgets == {"daily": 100.0}
    assert state.meta.checkpoint[PLANS] == 2


def test_a_tombstone_removes_the_plan_and_one_for_an_unknown_key_changes_nothing():
    state = PartitionState(0, CONFIG)
    fold_plans(state, [(b"c1", plan(targets={"cpa": 40})), (b"c1", None), (b"c9", None)])
    assert state.plans == {}
    assert state.dirty_plans == {"c1"}
    assert state.meta.rejected == {}


def test_a_channel_default_is_kept_under_its_own_key():
    default = Plan(None, "search", {"ctr": 0.04}, {}, None, None, None, {})
    state = PartitionState(0, CONFIG)
    fold_plans(state, [(plan_key(default), orjson.dumps(default.to_json()))])
    assert state.plans["\x00channel:search"].targets == {"ctr": 0.04}


@pytest.mark.parametrize(
    "key, value, says",
    [
        (None, plan(), "needs a key"),
        (b"\xff", plan(), "UTF-8"),
        (b"c1", b"{not json", "not JSON"),
        (b"c1", plan(targets={"cpa": -1}), "targets.cpa"),
        (b"c1", plan(targets={"ctr": 2}), "targets.ctr"),
        (b"c1", plan(budget={"weekly": 5}), "budget.weekly"),
        (b"c1", plan(timezone="Mars/Olympus"), "timezone"),
        (b"c1", plan(flight={"start": "2026-02-30"}), "flight.start"),
        (b"c1", plan(labels={"owner": "a\x00b"}), "U+0000"),
        (b"c2", plan("c1"), "key is not the plan's"),
        (b"c1", orjson.dumps({"channel": "search"}), "key is not the plan's"),
        (b"c1", orjson.dumps({"campaign_id": "c1", "schema": 2}), "schema"),
        # Time zones that are not zones: folders of tzdata (IsADirectoryError), a name too long
        # for the file system (OSError), paths, names meaning another zone on each machine.
        (b"c1", plan(timezone="Europe"), "not an IANA time zone"),
        (b"c1", plan(timezone="America"), "not an IANA time zone"),
        (b"c1", plan(timezone="Etc"), "not an IANA time zone"),
        (b"c1", plan(timezone="E" * 300), "not an IANA time zone"),
        (b"c1", plan(timezone="../../etc/passwd"), "not an IANA time zone"),
        (b"c1", plan(timezone="/etc/localtime"), "not an IANA time zone"),
        (b"c1", plan(timezone="localtime"), "not an IANA time zone"),
        (b"c1", plan(timezone="Europe/Berlin\x00"), "not an IANA time zone"),
        (b"c1", plan(timezone=""), "timezone must be"),
        (b"c1", plan(timezone=7), "timezone must be"),
        # A zone whose days do not start on the hour buckets: refused, not summed wrong.
        (b"c1", plan(timezone="Asia/Kolkata"), "KPI_LONG_BUCKET"),
        (b"c1", plan(timezone="Asia/Kathmandu"), "KPI_LONG_BUCKET"),
        (b"c1", plan(timezone="Australia/Lord_Howe"), "KPI_LONG_BUCKET"),
        # Numbers: not numbers, not finite, not positive, beyond any bound.
        (b"c1", b'{"campaign_id":"c1","targets":{"cpa":NaN}}', "not JSON"),
        (b"c1", b'{"campaign_id":"c1","targets":{"cpa":1e400}}', "not JSON"),
        (b"c1", plan(targets={"cpa": 0}), "targets.cpa"),
        (b"c1", plan(targets={"cpa": 1e300}), "targets.cpa"),
        (b"c1", b'{"campaign_id":"c1","targets":{"cpa":' + b"9" * 400 + b"}}", "not JSON"),
        (b"c1", plan(targets={"cpa": "12"}), "targets.cpa"),
        (b"c1", plan(targets={"cpa": True}), "targets.cpa"),
        (b"c1", plan(targets={"cpa": [1]}), "targets.cpa"),
        (b"c1", plan(budget={"daily": -5}), "budget.daily"),
        (b"c1", b'{"campaign_id":"c1","budget":{"total":' + b"1" * 400 + b"}}", "not JSON"),
        (b"c1", plan(targets=[1, 2]), "targets must be an object"),
        # Flights: an end before its start, dates that do not exist or do not fit.
        (b"c1", plan(flight={"start": "2026-05-02", "end": "2026-05-01"}), "before flight.start"),
        (b"c1", plan(flight={"end": "99999-01-01"}), "flight.end"),
        (b"c1", plan(flight={"start": 20260501}), "flight.start"),
        # Real dates whose day after (or before) is not: every horizon of the partition raised.
        (b"c1", plan(flight={"end": "9999-12-31"}), "outside 2000-01-01 .. 2099-12-31"),
        (b"c1", plan(flight={"start": "0001-01-01"}), "outside 2000-01-01 .. 2099-12-31"),
        (b"c1", plan(flight={"start": "1999-12-31"}), "outside 2000-01-01 .. 2099-12-31"),
        # Ids and labels that do not print: look-alikes on the page and in alerts.
        (b"c1\xc2\x85", plan("c1\x85"), "U+0085"),
        (b"c1\xe2\x80\xa8", plan("c1\u2028"), "U+2028"),
        (b"c1\xe2\x80\xae", plan("c1\u202e"), "U+202E"),
        (b"c1", plan(labels={"team": "ops\u2066x"}), "U+2066"),
        (b"c1", plan(labels={"owner": "\u200bana"}), "U+200B"),
        (b"c1", plan(labels={"market": "\ufeffDE"}), "U+FEFF"),
        (b"c1", plan(labels={"owner": "ana\u00a0b"}), "U+00A0"),
        # Wrong shapes: schema, not an object, unknown fields, nesting, no campaign nor channel.
        (b"c1", orjson.dumps({"campaign_id": "c1", "schema": "1"}), "schema"),
        (b"c1", orjson.dumps({"campaign_id": "c1", "schema": True}), "schema"),
        (b"c1", b"null", "a plan is a JSON object"),
        (b"c1", b"[1,2]", "a plan is a JSON object"),
        (b"c1", b"3", "a plan is a JSON object"),
        (b"c1", b"[" * 10_000 + b"]" * 10_000, "not JSON"),
        (b"c1", plan(bid=3), "unknown field"),
        (b"c1", orjson.dumps({"targets": {"cpa": 3}}), "exactly one of"),
        (b"c1", orjson.dumps({"campaign_id": "c1", "channel": "search"}), "exactly one of"),
        (b"c1", b"", "not JSON"),
    ],
)
def test_a_bad_plan_record_is_refused_and_changes_nothing_but_its_count(key, value, says):
    state = PartitionState(0, CONFIG)
    fold_plans(state, [(b"c1", plan(targets={"cpa": 40}))])
    changelog.finish_batch(state)
    before = canonical(state)
    refused = fold_plans(state, [(key, value)], start=1)
    assert [r.reason for r in refused] == ["invalid_plan"]
    assert says in refused[0].detail
    after = canonical(state)
    before.pop("meta")
    rejected_after = after.pop("meta")[0]
    assert after == before  # the plan in force stays
    assert rejected_after == {"invalid_plan": 1}
    assert state.meta.checkpoint[PLANS] == 1
    assert changelog.finish_batch(state)[:-1] == []  # only Meta is written


@pytest.mark.parametrize(
    "value, says",
    [
        ({"targets": {"cpa": 10**400}}, "targets.cpa must be a finite number"),
        ({"budget": {"daily": -(10**400)}}, "budget.daily must be a finite number"),
        ({"timezone": "Europe"}, "not an IANA time zone"),
    ],
)
def test_validation_answers_for_values_json_cannot_carry(value, says):
    """A YAML file's integers are unbounded, and a plan validated from any source must answer
    with a reason, not an OverflowError."""
    from stream.plans import validate_plan

    checked = validate_plan({"campaign_id": "c1", **value})
    assert isinstance(checked, str) and says in checked


def test_plans_survive_a_restore_beside_events_and_tombstones_are_written():
    state, log = run(as_messages([(kind("click"), raw(event("click")))]))
    fold_plans(
        state, [(b"c1", plan(targets={"cpa": 40})), (b"c2", plan("c2", budget={"total": 9}))]
    )
    log.extend(changelog.finish_batch(state))
    fold_plans(state, [(b"c2", None)], start=2)
    log.extend(changelog.finish_batch(state))
    restored = restore(log)
    assert canonical(restored) == canonical(state)
    assert set(restored.plans) == {"c1"}
    assert restored.resume_offsets()[PLANS] == 3


def test_a_plan_record_lost_with_its_meta_is_folded_again_to_the_same_end():
    """Crash after the plan record but before Meta: the restore holds the plan with an older
    checkpoint; refolding from that checkpoint ends where the run ended."""
    state = PartitionState(0, CONFIG)
    records = [
        (b"c1", plan(targets={"cpa": 40})),
        (b"c1", plan(targets={"cpa": 30})),
        (b"c1", None),
    ]
    log: list = []
    for offset, record in enumerate(records):
        fold_plans(state, [record], start=offset)
        log.extend(changelog.finish_batch(state))
    for cut in range(len(log) + 1):
        restored = restore(log[:cut])
        first = restored.meta.checkpoint[PLANS] + 1
        fold_plans(restored, records[first:], start=first)
        assert restored.plans == state.plans, cut


HOUR = 3_600_000


@pytest.mark.parametrize(
    "now_iso, zones",
    [
        # Two campaigns, the same events, different zones: different days.
        ("2026-06-10T15:20:00+00:00", {"tokyo": "Asia/Tokyo", "ny": "America/New_York"}),
        # The US spring change (8 March 2026): New York's day has 23 hours.
        ("2026-03-08T23:30:00+00:00", {"ny": "America/New_York", "utc": "UTC"}),
        # The autumn change in Berlin (25 October 2026): 25 hours.
        ("2026-10-25T21:10:00+00:00", {"berlin": "Europe/Berlin", "tokyo": "Asia/Tokyo"}),
    ],
)
def test_today_is_each_campaigns_own_calendar_day_across_zones_and_dst(now_iso, zones):
    """A click every hour for three days, folded for campaigns planned in different zones: each
    row's today / 7d count the hours since its own local midnight(s)."""
    now = int(datetime.fromisoformat(now_iso).timestamp() * 1000)
    current = now - now % CONFIG.bucket_ms
    state = PartitionState(0, CONFIG)
    fold_plans(state, [(c.encode(), plan(c, timezone=z)) for c, z in zones.items()])
    hours = [now - h * HOUR for h in range(72)]
    offset = 0
    for campaign in zones:
        for at in hours:
            messages = as_messages(
                [(kind("click"), raw(event("click", at_ms=at, campaign=campaign)))]
            )
            ((k, _, value),) = messages
            events, rejections = decode_message(value, k, now, RULES)
            state.apply_message(k, offset, events, rejections, now)
            offset += 1
    for campaign, zone in zones.items():
        row = campaign_row(state, campaign, current, CONFIG.bucket_ms, (3_600_000,))
        tz = ZoneInfo(zone)
        local_today = datetime.fromtimestamp(now / 1000, tz).date()
        midnight = datetime.combine(local_today, datetime.min.time(), tzinfo=tz)
        week_start = datetime.combine(
            local_today - timedelta(days=6), datetime.min.time(), tzinfo=tz
        )
        expected_today = sum(1 for at in hours if at >= midnight.timestamp() * 1000)
        expected_7d = sum(1 for at in hours if at >= week_start.timestamp() * 1000)
        assert row.horizons["today"].counts[kind("click")] == expected_today, zone
        assert row.horizons["7d"].counts[kind("click")] == expected_7d, zone
        assert len(row.horizons["today"].counts) == KINDS
    # The zones' days differ here: the same events give different todays.
    todays = {
        campaign_row(state, c, current, CONFIG.bucket_ms, (3_600_000,))
        .horizons["today"]
        .counts[kind("click")]
        for c in zones
    }
    assert len(todays) == 2
