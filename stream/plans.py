"""Campaign plans, contract v1: what each campaign is judged against. Pure: plain data in, a
:class:`Plan` or the reason it is refused out.

A plan belongs to one campaign (``campaign_id``), or is the default of one channel (``channel``)
for campaigns without a plan of their own. It holds targets for KPIs, budgets (daily, and total
for the flight), the flight (start and end dates), the time zone that defines the campaign's
"today", and routing labels (owner, team, market). Every field but the scope is optional.

The record on the plans topic is the JSON object of :meth:`Plan.to_json`; the same shape is read
from JSON lines and YAML files, and a CSV exported from a spreadsheet has one flat column per
field (:data:`CSV_COLUMNS`). Nothing here raises on bad input: a bad plan is a reason, never a
partial plan.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, available_timezones

import orjson

from .ids import unprintable

SCHEMA = 1
MAX_ID_LENGTH = 256
MAX_LABEL_LENGTH = 128
FIRST_DATE, LAST_DATE = date(2000, 1, 1), date(2099, 12, 31)  # a flight's dates
MAX_MONEY = 1e12  # a budget or money target, in the reporting currency
# KPI -> (kind of value, upper bound): ratios are shares, money is in the reporting currency,
# response_p95 is in seconds.
TARGETS: dict[str, tuple[str, float]] = {
    "cpa": ("money", MAX_MONEY),
    "cpl": ("money", MAX_MONEY),
    "cpc": ("money", MAX_MONEY),
    "roas": ("multiple", 1e6),
    "ctr": ("ratio", 1.0),
    "conversion": ("ratio", 1.0),
    "lead_rate": ("ratio", 1.0),
    "response_p95": ("seconds", 365 * 86400.0),
}
BUDGETS = ("daily", "total")
LABELS = ("owner", "team", "market")  # bounded: they become alert labels
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_FIELDS = {"schema", "campaign_id", "channel", "targets", "budget", "flight", "timezone", "labels"}

# The flat form, one column per field, for spreadsheets.
CSV_COLUMNS = (
    "campaign_id",
    "channel",
    *(f"target_{kpi}" for kpi in TARGETS),
    *(f"{period}_budget" for period in BUDGETS),
    "flight_start",
    "flight_end",
    "timezone",
    *LABELS,
)


class Plan(NamedTuple):
    campaign: str | None  # None: the default of ``channel``
    channel: str | None
    targets: dict[str, float]
    budgets: dict[str, float]  # "daily" and/or "total"
    flight_start: date | None
    flight_end: date | None
    timezone: str | None  # an IANA zone; None: KPI_TIMEZONE
    labels: dict[str, str]

    @property
    def scope(self) -> str:
        return "campaign" if self.campaign is not None else "channel"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA}
        if self.campaign is not None:
            out["campaign_id"] = self.campaign
        else:
            out["channel"] = self.channel
        if self.targets:
            out["targets"] = dict(self.targets)
        if self.budgets:
            out["budget"] = dict(self.budgets)
        flight = {}
        if self.flight_start is not None:
            flight["start"] = self.flight_start.isoformat()
        if self.flight_end is not None:
            flight["end"] = self.flight_end.isoformat()
        if flight:
            out["flight"] = flight
        if self.timezone is not None:
            out["timezone"] = self.timezone
        if self.labels:
            out["labels"] = dict(self.labels)
        return out


class _Refused(Exception):
    pass


def validate_plan(obj: object) -> Plan | str:
    """A plan from its JSON object, or why it is refused (naming the field)."""
    try:
        return _plan(obj)
    except _Refused as refused:
        return str(refused)
    except Exception as exc:  # the boundary holds: whatever a check raised, the plan is refused
        return f"refused: its check raised {type(exc).__name__}: {str(exc)[:200]}"


def _plan(obj: object) -> Plan:
    if not isinstance(obj, dict):
        raise _Refused(f"a plan is a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise _Refused(f"unknown field {unknown[0]!r}")
    schema = obj.get("schema", SCHEMA)
    if schema != SCHEMA or isinstance(schema, bool):
        raise _Refused(f"schema {schema!r}: this version reads schema {SCHEMA}")
    campaign = _identifier(obj, "campaign_id", MAX_ID_LENGTH)
    channel = _identifier(obj, "channel", MAX_ID_LENGTH)
    if (campaign is None) == (channel is None):
        raise _Refused("exactly one of campaign_id (a campaign's plan) or channel (a default)")
    targets = {}
    for kpi, value in _section(obj, "targets").items():
        if kpi not in TARGETS:
            raise _Refused(f"targets.{kpi}: not a KPI with a target ({', '.join(TARGETS)})")
        targets[kpi] = _positive(value, f"targets.{kpi}", TARGETS[kpi][1])
    budgets = {}
    for period, value in _section(obj, "budget").items():
        if period not in BUDGETS:
            raise _Refused(f"budget.{period}: budgets are daily and total")
        budgets[period] = _positive(value, f"budget.{period}", MAX_MONEY)
    flight = _section(obj, "flight")
    if set(flight) - {"start", "end"}:
        raise _Refused("flight holds start and end only")
    start, end = _date(flight.get("start"), "flight.start"), _date(flight.get("end"), "flight.end")
    if start is not None and end is not None and end < start:
        raise _Refused(f"flight.end {end} is before flight.start {start}")
    zone = obj.get("timezone")
    if zone is not None:
        zone = _zone(zone)
    labels = {}
    for name, value in _section(obj, "labels").items():
        if name not in LABELS:
            raise _Refused(f"labels.{name}: labels are {', '.join(LABELS)}")
        labels[name] = _label(value, f"labels.{name}")
    return Plan(campaign, channel, targets, budgets, start, end, zone, labels)


def _identifier(obj: dict, name: str, limit: int) -> str | None:
    value = obj.get(name)
    if value is None or value == "":
        return None
    return _label(value, name, limit)


def _label(value: object, name: str, limit: int = MAX_LABEL_LENGTH) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise _Refused(f"{name} must be a string of 1-{limit} characters")
    problem = unprintable(value)
    if problem is not None:
        raise _Refused(f"{name} {problem}")
    return value


def _section(obj: dict, name: str) -> dict:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Refused(f"{name} must be an object")
    return value


def _positive(value: object, name: str, bound: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Refused(f"{name} must be a number")
    try:
        number = float(value)  # a YAML or JSON integer of 400 digits: OverflowError
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise _Refused(f"{name} must be a finite number above 0")
    if number > bound:
        raise _Refused(f"{name} {number:g} is above its bound {bound:g}")
    return number


def _date(value: object, name: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date) and not isinstance(value, datetime):  # YAML reads dates itself
        day = value
    elif not isinstance(value, str) or not _DATE.fullmatch(value):
        raise _Refused(f"{name} must be a date, YYYY-MM-DD")
    else:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise _Refused(f"{name} {value!r} is not a real date") from None
    if not FIRST_DATE <= day <= LAST_DATE:
        # 9999-12-31 is a real date, but the day after it is not: the horizons of every campaign
        # of the partition would raise.
        raise _Refused(f"{name} {day} is outside {FIRST_DATE} .. {LAST_DATE}")
    return day


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    """The IANA zone names the tzdata package (or this machine) holds, less the names that mean
    a different zone on each machine (``localtime``, ``posixrules``) or none (``Factory``)."""
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def is_time_zone(name: object) -> bool:
    """Whether ``name`` is an IANA time zone this machine (or the tzdata package) knows. Never
    raises: a name is looked up in the set of known zones before it reaches the file system
    (``ZoneInfo("Europe")`` raises IsADirectoryError, a 300-character name OSError)."""
    if not isinstance(name, str) or name not in _known_zones():
        return False
    try:
        ZoneInfo(name)
    except Exception:  # a damaged tzdata file: not a zone, whatever it raised
        return False
    return True


def _zone(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _Refused("timezone must be an IANA time zone name such as Europe/Berlin")
    if not is_time_zone(value):
        raise _Refused(f"timezone {value[:60]!r} is not an IANA time zone")
    return value


def from_csv_row(row: dict[str, str]) -> dict[str, Any]:
    """The JSON form of one CSV row (empty cells are absent fields; numbers stay text until
    validated, so that '1,5' is refused rather than misread)."""
    out: dict[str, Any] = {}
    for name in ("campaign_id", "channel", "timezone"):
        if row.get(name, "").strip():
            out[name] = row[name].strip()
    sections: dict[str, dict[str, Any]] = {"targets": {}, "budget": {}, "flight": {}, "labels": {}}
    for kpi in TARGETS:
        sections["targets"][kpi] = row.get(f"target_{kpi}", "")
    for period in BUDGETS:
        sections["budget"][period] = row.get(f"{period}_budget", "")
    sections["flight"] = {"start": row.get("flight_start", ""), "end": row.get("flight_end", "")}
    for label in LABELS:
        sections["labels"][label] = row.get(label, "")
    for name, section in sections.items():
        present = {k: v.strip() for k, v in section.items() if v is not None and v.strip()}
        if not present:
            continue
        if name in ("targets", "budget"):
            out[name] = {k: _number(v, f"{name}.{k}") for k, v in present.items()}
        else:
            out[name] = present
    return out


def _number(text: str, name: str) -> object:
    """A cell's number, or the text itself (then refused by validation, naming the field)."""
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def plan_key(plan: Plan) -> bytes:
    """The plans topic's key: the campaign id, or for a channel default a NUL and the channel
    (no campaign id holds a NUL, so the two never share a key under compaction)."""
    if plan.campaign is not None:
        return plan.campaign.encode()
    assert plan.channel is not None
    return channel_key(plan.channel).encode()


def decode_plan_record(key: bytes | None, value: bytes | None) -> tuple[str, Plan | None] | str:
    """A plans-topic record: (its key as text, the plan, or None for a tombstone), or why it is
    refused. The key must be the plan's own (``plan_key``): compaction keeps the latest record
    per key, so a plan under another key would outlive its own tombstone."""
    if not key:
        return "a plan record needs a key"
    try:
        name = key.decode()
    except UnicodeDecodeError:
        return "the key is not UTF-8"
    if value is None:
        return name, None
    try:
        checked = validate_plan(orjson.loads(value))
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    if isinstance(checked, str):
        return checked
    if plan_key(checked) != key:
        return "the key is not the plan's campaign_id (or channel default key)"
    return name, checked


def channel_key(channel: str) -> str:
    """Where a channel's default is held (``plan_key`` as text)."""
    return "\x00channel:" + channel


def main_channel(by_channel: dict[str, list[int]]) -> str | None:
    """The channel a campaign's events mostly come from (ties: the first by name)."""
    if not by_channel:
        return None
    return min(by_channel, key=lambda ch: (-sum(by_channel[ch]), ch))


def effective_plan(plans: dict[str, Plan], campaign: str, channel: str | None) -> Plan | None:
    """The plan a campaign is judged against: its own, with each field it leaves empty taken
    from its channel's default (targets, budgets and labels one by one; the flight whole); the
    default alone if it has none of its own; None if neither exists."""
    own = plans.get(campaign)
    default = plans.get(channel_key(channel)) if channel is not None else None
    if default is None:
        return own
    if own is None:
        return default._replace(campaign=campaign, channel=channel)
    # A flight is one value, taken whole: the campaign's own end with its channel's start would
    # make a flight nobody planned (an end before its start).
    own_flight = own.flight_start is not None or own.flight_end is not None
    flight = own if own_flight else default
    return Plan(
        campaign,
        own.channel,
        {**default.targets, **own.targets},
        {**default.budgets, **own.budgets},
        flight.flight_start,
        flight.flight_end,
        own.timezone or default.timezone,
        {**default.labels, **own.labels},
    )
