import math

import orjson
import pytest

from stream.events import (
    REASONS,
    ValidationRules,
    decode_message,
)
from tests.factories import NOW_MS, event, kind, raw

RULES = ValidationRules(currency="USD", future_tolerance_ms=300_000)


def decode(payload: bytes, topic: str):
    return decode_message(payload, kind(topic), NOW_MS, RULES)


@pytest.mark.parametrize("event_type", ["impression", "click", "lead", "sale", "sales_contact"])
def test_each_type_decodes(event_type):
    events, rejected = decode(raw(event(event_type, channel="search")), event_type)
    assert rejected == []
    assert len(events) == 1 and events[0].kind == kind(event_type)
    assert events[0].channel == "search"


@pytest.mark.parametrize(
    "stamp, expected",
    [
        ("2026-09-21T14:13:20Z", 1_790_000_000_000),
        ("2026-09-21T16:13:20+02:00", 1_790_000_000_000),
        ("2026-09-21T14:13:20.123Z", 1_790_000_000_123),
        ("2026-09-21 14:13:20.5+00:30", 1_789_998_200_500),
        (1_790_000_000_000, 1_790_000_000_000),
    ],
)
def test_timestamps(stamp, expected):
    (parsed,), _ = decode(raw(event("click", at_ms=0) | {"occurred_at": stamp}), "click")
    assert parsed.occurred_ms == expected


def test_defaults_and_amounts():
    (e,), _ = decode(raw(event("impression", cost=0.0123)), "impression")
    assert e.channel == "unknown" and e.amount_micros == 12_300 and e.lead_id is None
    (s,), _ = decode(raw(event("sale", value=19.99, lead_id="L1", order_id="o-1")), "sale")
    assert s.amount_micros == 19_990_000 and s.lead_id == "L1"


def test_batch_rejects_bad_elements_alone():
    good1, good2 = event("click"), event("click")
    payload = orjson.dumps([good1, {"event_type": "click"}, 7, good2])
    events, rejected = decode(payload, "click")
    assert [e.event_id for e in events] == [good1["event_id"], good2["event_id"]]
    assert [(r.reason, r.element) for r in rejected] == [("missing_field", 1), ("not_an_object", 2)]
    assert orjson.loads(rejected[0].original) == {"event_type": "click"}


BAD = [
    (b"not json", "click", "invalid_json"),
    (b"\xff\xfe{}", "click", "invalid_json"),
    (b"", "click", "invalid_json"),
    (b"[]", "click", "not_an_object"),
    (b'"a string"', "click", "not_an_object"),
    (raw(event("click") | {"event_type": "view"}), "click", "unknown_event_type"),
    (raw(event("click") | {"event_type": 3}), "click", "unknown_event_type"),
    (raw(event("impression")), "click", "topic_mismatch"),
    (raw({k: v for k, v in event("click").items() if k != "event_id"}), "click", "missing_field"),
    (
        raw({k: v for k, v in event("click").items() if k != "campaign_id"}),
        "click",
        "missing_field",
    ),
    (
        raw({k: v for k, v in event("click").items() if k != "occurred_at"}),
        "click",
        "missing_field",
    ),
    (raw(event("click", event_id="")), "click", "invalid_field"),
    (raw(event("click") | {"campaign_id": 12}), "click", "invalid_field"),
    (raw(event("click") | {"channel": ["a"]}), "click", "invalid_field"),
    (raw(event("click") | {"user_id": "x" * 300}), "click", "invalid_field"),
    (raw(event("click", cost=-1)), "click", "invalid_field"),
    (raw(event("click", cost="1.0")), "click", "invalid_field"),
    (raw(event("click", cost=True)), "click", "invalid_field"),
    (raw(event("click") | {"occurred_at": "2026-09-21T14:13:20"}), "click", "invalid_timestamp"),
    (raw(event("click") | {"occurred_at": "2026-09-21"}), "click", "invalid_timestamp"),
    (
        raw(event("click") | {"occurred_at": "yesterday at noon, roughly"}),
        "click",
        "invalid_timestamp",
    ),
    (raw(event("click") | {"occurred_at": 1_790_000_000}), "click", "invalid_timestamp"),
    (raw(event("click") | {"occurred_at": 1.79e12}), "click", "invalid_timestamp"),
    (raw(event("click") | {"occurred_at": True}), "click", "invalid_timestamp"),
    (raw(event("click", at_ms=NOW_MS + 300_001)), "click", "future_timestamp"),
    (raw({k: v for k, v in event("lead").items() if k != "lead_id"}), "lead", "missing_field"),
    (
        raw({k: v for k, v in event("sales_contact").items() if k != "lead_id"}),
        "sales_contact",
        "missing_field",
    ),
    (raw({k: v for k, v in event("sale").items() if k != "value"}), "sale", "missing_field"),
    (raw({k: v for k, v in event("sale").items() if k != "currency"}), "sale", "missing_field"),
    (raw(event("sale", value=-5)), "sale", "invalid_field"),
    (raw(event("sale", currency="usd")), "sale", "invalid_field"),
    (raw(event("sale", currency="EUR")), "sale", "currency"),
]


@pytest.mark.parametrize("payload, topic, reason", BAD)
def test_bad_input_is_rejected_with_reason(payload, topic, reason):
    events, rejected = decode(payload, topic)
    assert events == []
    assert [r.reason for r in rejected] == [reason]
    assert rejected[0].original == payload and rejected[0].element is None
    assert reason in REASONS


def test_every_reason_is_exercised():
    assert {reason for _, _, reason in BAD} == set(REASONS)


def test_future_tolerance_boundary_is_accepted():
    events, rejected = decode(raw(event("click", at_ms=NOW_MS + 300_000)), "click")
    assert len(events) == 1 and not rejected


def test_nan_is_not_json():
    _events, rejected = decode(b'{"cost": NaN}', "click")
    assert rejected[0].reason == "invalid_json"
    assert not math.isnan(0.0)  # orjson refuses NaN literals, so no NaN can reach the sums
