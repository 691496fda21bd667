"""Event contract v1: decode Kafka message bytes into validated events or rejections.

A message holds one JSON object or a JSON array of them. Each object is validated alone, so one
bad event in a batch is rejected without its neighbours. Nothing here raises on bad input: every
failure becomes a :class:`Rejection` with a reason from the bounded set :data:`REASONS`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson

EVENT_TYPES = ("impression", "click", "lead", "sale", "sales_contact")
IMPRESSION, CLICK, LEAD, SALE, SALES_CONTACT = range(5)
_KIND_BY_NAME = {name: kind for kind, name in enumerate(EVENT_TYPES)}

REASONS = (
    "invalid_json",
    "not_an_object",
    "missing_field",
    "invalid_field",
    "unknown_event_type",
    "topic_mismatch",
    "invalid_timestamp",
    "future_timestamp",
    "currency",
)

DEFAULT_CHANNEL = "unknown"
MAX_ID_LENGTH = 256
MICROS = 1_000_000
# Epoch values below 2000-01-01 are almost always seconds sent where milliseconds were meant.
_MIN_EPOCH_MS = 946_684_800_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


class Event(NamedTuple):
    kind: int  # index into EVENT_TYPES
    event_id: str
    occurred_ms: int
    campaign: str
    channel: str
    amount_micros: int  # cost (impression, click) or value (sale) in millionths of the currency
    lead_id: str | None


class Rejection(NamedTuple):
    reason: str  # one of REASONS: a bounded metric label
    detail: str  # human-readable, names the field; goes to the dead-letter headers only
    element: int | None  # position inside a batch message, None for the whole message
    original: bytes  # the rejected bytes: the whole message, or the one element re-encoded


class ValidationRules(NamedTuple):
    currency: str = "USD"
    future_tolerance_ms: int = 300_000


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def decode_message(
    raw: bytes, topic_kind: int, now_ms: int, rules: ValidationRules
) -> tuple[list[Event], list[Rejection]]:
    """Split one Kafka message value into valid events and rejections."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [], [Rejection("invalid_json", str(exc)[:200], None, raw)]
    if isinstance(payload, dict):
        try:
            return [validate_event(payload, topic_kind, now_ms, rules)], []
        except _Invalid as bad:
            return [], [Rejection(bad.reason, bad.detail, None, raw)]
    if not isinstance(payload, list) or not payload:
        return [], [
            Rejection(
                "not_an_object", "message is neither an object nor a non-empty array", None, raw
            )
        ]
    events: list[Event] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(payload):
        try:
            if not isinstance(item, dict):
                raise _Invalid("not_an_object", f"batch element is {type(item).__name__}")
            events.append(validate_event(item, topic_kind, now_ms, rules))
        except _Invalid as bad:
            rejections.append(Rejection(bad.reason, bad.detail, index, orjson.dumps(item)))
    return events, rejections


def validate_event(obj: dict, topic_kind: int, now_ms: int, rules: ValidationRules) -> Event:
    """One JSON object to an :class:`Event`; raises ``_Invalid`` naming the problem.

    Written for the common case: each field is checked inline with exact type tests, and only a
    field that fails goes through the slower helper that says precisely what is wrong.
    """
    get = obj.get
    type_name = get("event_type")
    kind = _KIND_BY_NAME.get(type_name) if type(type_name) is str else None
    if kind is None:
        if type_name is None:
            raise _Invalid("missing_field", "event_type")
        raise _Invalid("unknown_event_type", f"event_type={str(type_name)[:40]!r}")
    if kind != topic_kind:
        raise _Invalid(
            "topic_mismatch", f"{type_name} event on the {EVENT_TYPES[topic_kind]} topic"
        )
    event_id = get("event_id")
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_LENGTH:
        event_id = _required_identifier(obj, "event_id")
    campaign = get("campaign_id")
    if type(campaign) is not str or not 0 < len(campaign) <= MAX_ID_LENGTH:
        campaign = _required_identifier(obj, "campaign_id")
    channel = get("channel")
    if channel is None:
        channel = DEFAULT_CHANNEL
    elif type(channel) is not str or not 0 < len(channel) <= MAX_ID_LENGTH:
        _identifier(obj, "channel", required=False)
    value = get("ad_id")
    if value is not None and (type(value) is not str or not 0 < len(value) <= MAX_ID_LENGTH):
        _identifier(obj, "ad_id", required=False)
    value = get("user_id")
    if value is not None and (type(value) is not str or not 0 < len(value) <= MAX_ID_LENGTH):
        _identifier(obj, "user_id", required=False)
    occurred = get("occurred_at")
    if type(occurred) is int and occurred >= _MIN_EPOCH_MS:
        occurred_ms = occurred
    else:
        occurred_ms = parse_timestamp(occurred)
    if occurred_ms - now_ms > rules.future_tolerance_ms:
        raise _Invalid(
            "future_timestamp", f"occurred_at is {(occurred_ms - now_ms) // 1000}s ahead"
        )

    amount = 0
    lead_id = None
    if kind <= CLICK:  # impression, click
        cost = get("cost")
        if cost is not None:
            if (type(cost) is float or type(cost) is int) and 0 <= cost < math.inf:
                amount = round(cost * MICROS)
            else:
                amount = _amount(obj, "cost", required=False)
    elif kind == SALE:
        amount = _amount(obj, "value", required=True)
        currency = get("currency")
        if currency is None:
            raise _Invalid("missing_field", "currency")
        if not (
            isinstance(currency, str)
            and len(currency) == 3
            and currency.isalpha()
            and currency.isupper()
        ):
            raise _Invalid("invalid_field", "currency must be an ISO 4217 code")
        if currency != rules.currency:
            raise _Invalid("currency", f"{currency} is not the reporting currency {rules.currency}")
        lead_id = _identifier(obj, "lead_id", required=False)
        _identifier(obj, "order_id", required=False)
    else:  # LEAD, SALES_CONTACT
        lead_id = _identifier(obj, "lead_id", required=True)
    return Event(kind, event_id, occurred_ms, campaign, channel, amount, lead_id)


def _required_identifier(obj: dict, name: str) -> str:
    value = _identifier(obj, name, required=True)
    assert value is not None  # required: _identifier raised instead
    return value


def _identifier(obj: dict, name: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid("missing_field", name)
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise _Invalid(
            "invalid_field",
            f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} characters",
        )
    return value


def _amount(obj: dict, name: str, *, required: bool) -> int:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid("missing_field", name)
        return 0
    kind = type(value)
    if (kind is float or kind is int) and 0 <= value < math.inf:
        return round(value * MICROS)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid("invalid_field", f"{name} must be a number")
    if not math.isfinite(value) or value < 0:
        raise _Invalid("invalid_field", f"{name} must be a finite number >= 0")
    return round(value * MICROS)


def parse_timestamp(value: object) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds, to epoch milliseconds."""
    if value is None:
        raise _Invalid("missing_field", "occurred_at")
    if isinstance(value, bool):
        raise _Invalid("invalid_timestamp", "occurred_at must be RFC 3339 or epoch milliseconds")
    if isinstance(value, int):
        if value < _MIN_EPOCH_MS:
            raise _Invalid("invalid_timestamp", "epoch value before 2000: milliseconds expected")
        return value
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt ":
        raise _Invalid("invalid_timestamp", "occurred_at must be RFC 3339 or epoch milliseconds")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid("invalid_timestamp", f"unparseable occurred_at {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise _Invalid("invalid_timestamp", "occurred_at needs a UTC offset (Z or +hh:mm)")
    return (parsed - _EPOCH) // _ONE_MS
