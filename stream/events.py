"""Event contract v1: decode Kafka message bytes into validated events or rejections.

A message holds one JSON object or a JSON array of them. Each object is validated alone, so one
bad event in a batch is rejected without its neighbours. Nothing here raises on bad input: every
failure becomes a :class:`Rejection` with a reason from the bounded set :data:`REASONS`.

The contract is checked at this boundary, so that nothing downstream has to trust its input:
every timestamp form passes one range check (2000-01-01 up to the future tolerance), identifiers
hold only characters that print (``stream.ids``: they become metric labels, JSON, the live page
and a pauser's command environment),
money has an upper bound per field, and a message is bounded in bytes and in events before it is
parsed or folded. A message is decoded in two steps, :func:`parse_message` and
:func:`validate_elements` over slices of it, so that a caller can yield inside a large one.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import orjson

from .ids import unprintable

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
    "message_too_large",
    "too_many_events",
    "invalid_plan",  # a record of the plans topic (stream.plans)
    "internal_error",  # a record whose fold raised where validation did not expect it
)
INTERNAL_ERROR = "internal_error"

DEFAULT_CHANNEL = "unknown"
MAX_ID_LENGTH = 256
MICROS = 1_000_000
# Epoch values below 2000-01-01 are almost always seconds sent where milliseconds were meant; the
# same floor holds for RFC 3339 strings, so no form can carry a time the state cannot hold.
MIN_OCCURRED_MS = 946_684_800_000
# A message's events are positioned ``(offset << 20) | index`` in state (``stream.state``).
EVENTS_PER_MESSAGE_LIMIT = 1 << 20
# RFC 3339 section 5.6 date-time, with the lower-case and space separators its notes allow.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,  # \d would take any script's digits
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


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
    max_cost: float = 10_000.0  # per impression or click, in the reporting currency
    max_sale_value: float = 10_000_000.0  # per sale, in the reporting currency
    max_events_per_message: int = 10_000
    max_message_bytes: int = 4 << 20


class Parsed(NamedTuple):
    """A message's JSON value, split into the elements to validate."""

    items: list  # the array's elements, or the one object
    single: bool  # the message was one object: its rejection names the whole message
    raw: bytes


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def decode_message(
    raw: bytes, topic_kind: int, now_ms: int, rules: ValidationRules
) -> tuple[list[Event], list[Rejection]]:
    """Split one Kafka message value into valid events and rejections."""
    parsed = parse_message(raw, rules)
    if isinstance(parsed, Rejection):
        return [], [parsed]
    events: list[Event] = []
    rejections: list[Rejection] = []
    validate_elements(parsed, 0, len(parsed.items), topic_kind, now_ms, rules, events, rejections)
    return events, rejections


def parse_message(raw: bytes, rules: ValidationRules) -> Parsed | Rejection:
    """The message's elements, or the one rejection of the whole message.

    The size is checked before parsing: a message of a hundred megabytes is refused in no time
    instead of held in memory as a million dicts (Kafka accepts it if it compresses well)."""
    if len(raw) > rules.max_message_bytes:
        return Rejection(
            "message_too_large",
            f"{len(raw)} bytes, more than {rules.max_message_bytes} (KPI_MAX_MESSAGE_BYTES)",
            None,
            raw,
        )
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("invalid_json", str(exc)[:200], None, raw)
    if isinstance(payload, dict):
        return Parsed([payload], True, raw)
    if not isinstance(payload, list) or not payload:
        return Rejection(
            "not_an_object", "message is neither an object nor a non-empty array", None, raw
        )
    if len(payload) > rules.max_events_per_message:
        return Rejection(
            "too_many_events",
            f"{len(payload)} events, more than {rules.max_events_per_message} "
            "(KPI_MAX_EVENTS_PER_MESSAGE)",
            None,
            raw,
        )
    return Parsed(payload, False, raw)


def validate_elements(
    parsed: Parsed,
    start: int,
    stop: int,
    topic_kind: int,
    now_ms: int,
    rules: ValidationRules,
    events: list[Event],
    rejections: list[Rejection],
) -> None:
    """Validate ``parsed.items[start:stop]``, appending to ``events`` and ``rejections``."""
    if parsed.single:
        try:
            events.append(validate_event(parsed.items[0], topic_kind, now_ms, rules))
        except _Invalid as bad:
            rejections.append(Rejection(bad.reason, bad.detail, None, parsed.raw))
        return
    items = parsed.items
    for index in range(start, stop):
        item = items[index]
        try:
            if not isinstance(item, dict):
                raise _Invalid("not_an_object", f"batch element is {type(item).__name__}")
            events.append(validate_event(item, topic_kind, now_ms, rules))
        except _Invalid as bad:
            rejections.append(Rejection(bad.reason, bad.detail, index, orjson.dumps(item)))


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
    # Fast path: a printable string of the right length; anything else goes to the helper that
    # says what is wrong (isprintable is false for some harmless characters too, such as a
    # no-break space: the helper accepts those).
    event_id = get("event_id")
    if (
        type(event_id) is not str
        or not 0 < len(event_id) <= MAX_ID_LENGTH
        or not event_id.isprintable()
    ):
        event_id = _required_identifier(obj, "event_id")
    campaign = get("campaign_id")
    if (
        type(campaign) is not str
        or not 0 < len(campaign) <= MAX_ID_LENGTH
        or not campaign.isprintable()
    ):
        campaign = _required_identifier(obj, "campaign_id")
    channel = get("channel")
    if channel is None:
        channel = DEFAULT_CHANNEL
    elif (
        type(channel) is not str
        or not 0 < len(channel) <= MAX_ID_LENGTH
        or not channel.isprintable()
    ):
        _identifier(obj, "channel", required=False)
    value = get("ad_id")
    if value is not None and (
        type(value) is not str or not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable()
    ):
        _identifier(obj, "ad_id", required=False)
    value = get("user_id")
    if value is not None and (
        type(value) is not str or not 0 < len(value) <= MAX_ID_LENGTH or not value.isprintable()
    ):
        _identifier(obj, "user_id", required=False)
    occurred = get("occurred_at")
    if type(occurred) is int and occurred >= MIN_OCCURRED_MS:
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
            if (type(cost) is float or type(cost) is int) and 0 <= cost <= rules.max_cost:
                amount = round(cost * MICROS)
            else:
                amount = _amount(obj, "cost", rules.max_cost, required=False)
    elif kind == SALE:
        amount = _amount(obj, "value", rules.max_sale_value, required=True)
        currency = get("currency")
        if currency is None:
            raise _Invalid("missing_field", "currency")
        if not (
            isinstance(currency, str)
            and len(currency) == 3
            and currency.isascii()  # fullwidth "ＵＳＤ" is alphabetic and upper case too
            and currency.isalpha()
            and currency.isupper()
        ):
            raise _Invalid("invalid_field", "currency must be an ISO 4217 code: three letters A-Z")
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
    problem = unprintable(value)
    if problem is not None:
        raise _Invalid("invalid_field", f"{name} {problem}")
    return value


def _amount(obj: dict, name: str, maximum: float, *, required: bool) -> int:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid("missing_field", name)
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid("invalid_field", f"{name} must be a number")
    if not math.isfinite(value) or value < 0:
        raise _Invalid("invalid_field", f"{name} must be a finite number >= 0")
    if value > maximum:
        raise _Invalid("invalid_field", f"{name} {value:g} is above its bound {maximum:g}")
    return round(value * MICROS)


def parse_timestamp(value: object) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds, to epoch milliseconds, from
    2000-01-01 on (the future is checked by the caller, against its clock)."""
    if value is None:
        raise _Invalid("missing_field", "occurred_at")
    if isinstance(value, bool):
        raise _Invalid("invalid_timestamp", "occurred_at must be RFC 3339 or epoch milliseconds")
    if isinstance(value, int):
        if value < MIN_OCCURRED_MS:
            raise _Invalid("invalid_timestamp", "epoch value before 2000: milliseconds expected")
        return value
    if not isinstance(value, str):
        raise _Invalid("invalid_timestamp", "occurred_at must be RFC 3339 or epoch milliseconds")
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise _Invalid(
            "invalid_timestamp",
            f"occurred_at {value[:40]!r} is not RFC 3339 with an offset (Z or +hh:mm)",
        )
    ms = rfc3339_ms(match)
    if ms is None:
        raise _Invalid("invalid_timestamp", f"occurred_at {value[:40]!r} is not a real time")
    if ms < MIN_OCCURRED_MS:
        raise _Invalid("invalid_timestamp", f"occurred_at {value[:40]!r} is before 2000")
    return ms


def rfc3339_ms(match: re.Match[str]) -> int | None:
    """Epoch milliseconds of a matched RFC 3339 date-time, None if a field is out of range (a
    leap second, 23:59:60 UTC, is the next day's first millisecond)."""
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    y, mo, d, h, mi, sec = int(year), int(month), int(day), int(hour), int(minute), int(second)
    if not 1 <= mo <= 12 or h > 23 or mi > 59 or sec > 60:
        return None
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not 1 <= d <= _DAYS_IN_MONTH[mo - 1] + (leap and mo == 2):
        return None
    offset_s = 0
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            return None
        offset_s = (oh * 3600 + om * 60) * (1 if sign == "+" else -1)
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    seconds = _days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s
    if sec == 60 and seconds % 86_400 != 0:  # a leap second is 23:59:60 UTC, nothing else
        return None
    return seconds * 1000 + millis


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468
