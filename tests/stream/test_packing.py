"""Whatever the contract accepts, the state holds exactly: times, money and positions survive the
fold, the records and a restore unchanged (a value the packing cannot hold is refused at the
boundary, never wrapped or saturated)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import changelog
from stream.events import MIN_OCCURRED_MS, ValidationRules, decode_message
from stream.leads import LeadJoin
from stream.state import MAX_EVENTS_PER_MESSAGE, POSITION_BITS, PartitionState
from tests.factories import NOW_MS, event, kind
from tests.state_harness import CONFIG, buckets, restore

RULES = ValidationRules()
TIMES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=MIN_OCCURRED_MS - 10, max_value=NOW_MS + 400_000),
    st.datetimes().map(lambda moment: moment.isoformat(timespec="milliseconds") + "Z"),
)
MONEY = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),  # orjson writes inf as null
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(min_value=0, max_value=20_000_000),
)
OFFSETS = st.integers(min_value=0, max_value=2**40)
INDEXES = st.integers(min_value=0, max_value=MAX_EVENTS_PER_MESSAGE - 1)


def _accepted(body: dict, event_type: str):
    events, _ = decode_message(orjson.dumps(body), kind(event_type), NOW_MS, RULES)
    return events[0] if events else None


@settings(max_examples=300, deadline=None)
@given(occurred=TIMES, offset=OFFSETS, index=INDEXES, contact=st.booleans())
def test_lead_times_and_positions_round_trip(occurred, offset, index, contact):
    event_type = "sales_contact" if contact else "lead"
    accepted = _accepted(event(event_type, lead_id="L1") | {"occurred_at": occurred}, event_type)
    if accepted is None:
        return
    state = PartitionState(0, CONFIG)
    state.begin_message(kind(event_type), offset, NOW_MS)
    state.apply_events(kind(event_type), offset, index, [accepted], NOW_MS)
    state.end_message(kind(event_type), offset)
    log = changelog.finish_batch(state)
    position = (offset << POSITION_BITS) | index
    expected = (
        LeadJoin(None, accepted.occurred_ms, -1, position)
        if contact
        else LeadJoin(accepted.occurred_ms, None, position, -1)
    )
    assert state.lead("c1", "L1") == expected
    assert restore(log).lead("c1", "L1") == expected
    assert LeadJoin.unpack(expected.pack()) == expected
    assert accepted.occurred_ms >= MIN_OCCURRED_MS


@settings(max_examples=300, deadline=None)
@given(amount=MONEY, offset=OFFSETS, index=INDEXES, sale=st.booleans())
def test_money_and_positions_round_trip(amount, offset, index, sale):
    event_type = "sale" if sale else "click"
    field = "value" if sale else "cost"
    accepted = _accepted(event(event_type) | {field: amount}, event_type)
    if accepted is None:
        return
    assert accepted.amount_micros == round(amount * 1_000_000)
    state = PartitionState(0, CONFIG)
    state.apply_events(kind(event_type), offset, index, [accepted], NOW_MS)
    log = changelog.finish_batch(state)
    for held in (state, restore(log)):
        (bucket,) = buckets(held, "c1").values()
        assert (bucket.revenue if sale else bucket.spend) == accepted.amount_micros
        assert held.campaigns["c1"].hw[kind(event_type)] == (offset << POSITION_BITS) | index


@pytest.mark.parametrize(
    "record",
    [
        LeadJoin(lead_ms=-1),
        LeadJoin(contact_ms=-62_135_596_800_000),  # 0001-01-01
        LeadJoin(lead_ms=2**64),
        LeadJoin(lead_ms=1, lead_hw=-2),
        LeadJoin(lead_ms=1, contact_hw=2**64),
    ],
)
def test_packing_refuses_what_it_cannot_hold(record):
    with pytest.raises(ValueError):
        record.pack()


def test_positions_beyond_a_message_are_refused():
    state = PartitionState(0, CONFIG)
    (accepted,) = decode_message(orjson.dumps(event("click")), kind("click"), NOW_MS, RULES)[0]
    with pytest.raises(ValueError):
        state.apply_events(kind("click"), 0, MAX_EVENTS_PER_MESSAGE, [accepted], NOW_MS)
