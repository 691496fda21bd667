"""Campaign plans: one table of refused plans (one row per class of bad input), the round trip
of every accepted plan, and plan files read row by row with each bad row named by its line."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.plan_files import FileRefused, format_of, read_plans
from stream.plans import TARGETS, Plan, from_csv_row, plan_key, validate_plan

GOOD = {
    "campaign_id": "spring-sale",
    "targets": {"cpa": 40, "roas": 3.5, "ctr": 0.02, "response_p95": 900},
    "budget": {"daily": 500, "total": 12_000},
    "flight": {"start": "2026-11-01", "end": "2026-12-31"},
    "timezone": "Europe/Berlin",
    "labels": {"owner": "ana", "team": "emea-search", "market": "DE"},
}


def test_a_full_plan_is_read():
    plan = validate_plan(GOOD)
    assert isinstance(plan, Plan)
    assert plan.campaign == "spring-sale" and plan.scope == "campaign"
    assert plan.targets == {"cpa": 40.0, "roas": 3.5, "ctr": 0.02, "response_p95": 900.0}
    assert plan.budgets == {"daily": 500.0, "total": 12_000.0}
    assert (plan.flight_start, plan.flight_end) == (date(2026, 11, 1), date(2026, 12, 31))
    assert plan.labels["owner"] == "ana"
    assert validate_plan(plan.to_json()) == plan


def test_a_channel_default_has_its_own_key():
    plan = validate_plan({"channel": "display", "targets": {"ctr": 0.002}})
    assert isinstance(plan, Plan) and plan.scope == "channel"
    campaign = validate_plan({"campaign_id": "display"})
    assert isinstance(campaign, Plan)
    assert plan_key(plan) != plan_key(campaign)  # never compacted into one another


REFUSED = [
    ([1, 2], "JSON object"),
    ({}, "exactly one of campaign_id"),
    ({"campaign_id": "a", "channel": "b"}, "exactly one of campaign_id"),
    ({"campaign_id": "a\x00b"}, "U+0000"),
    ({"campaign_id": "x" * 257}, "1-256"),
    ({"campaign_id": 7}, "campaign_id must be a string"),
    ({"campaign_id": "a", "budgets": {}}, "unknown field 'budgets'"),
    ({"campaign_id": "a", "schema": 2}, "schema 2"),
    ({"campaign_id": "a", "targets": {"cpm": 3}}, "targets.cpm: not a KPI"),
    ({"campaign_id": "a", "targets": {"cpa": 0}}, "above 0"),
    ({"campaign_id": "a", "targets": {"cpa": -1}}, "above 0"),
    ({"campaign_id": "a", "targets": {"cpa": "40"}}, "must be a number"),
    ({"campaign_id": "a", "targets": {"cpa": True}}, "must be a number"),
    ({"campaign_id": "a", "targets": {"ctr": 1.5}}, "targets.ctr 1.5 is above its bound 1"),
    ({"campaign_id": "a", "targets": {"cpa": 1e300}}, "above its bound"),
    ({"campaign_id": "a", "targets": []}, "targets must be an object"),
    ({"campaign_id": "a", "budget": {"weekly": 10}}, "budgets are daily and total"),
    ({"campaign_id": "a", "budget": {"daily": float("nan")}}, "finite"),
    ({"campaign_id": "a", "flight": {"start": "01/11/2026"}}, "YYYY-MM-DD"),
    ({"campaign_id": "a", "flight": {"start": "2026-02-30"}}, "not a real date"),
    ({"campaign_id": "a", "flight": {"start": "2026-12-01", "end": "2026-11-01"}}, "before"),
    ({"campaign_id": "a", "flight": {"from": "2026-12-01"}}, "start and end only"),
    ({"campaign_id": "a", "timezone": "Mars/Olympus"}, "not an IANA time zone"),
    ({"campaign_id": "a", "timezone": "../../etc/passwd"}, "not an IANA time zone"),
    ({"campaign_id": "a", "timezone": 1}, "IANA time zone name"),
    ({"campaign_id": "a", "labels": {"region": "x"}}, "labels are owner, team, market"),
    ({"campaign_id": "a", "labels": {"owner": "x" * 129}}, "1-128"),
    ({"campaign_id": "a", "labels": {"owner": "a\nb"}}, "U+000A"),
]


@pytest.mark.parametrize("obj, reason", REFUSED)
def test_bad_plans_are_refused_naming_the_field(obj, reason):
    refused = validate_plan(obj)
    assert isinstance(refused, str) and reason in refused


finite = st.floats(min_value=1e-6, max_value=1.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    campaign=st.text(min_size=1, max_size=40).filter(lambda s: s.isprintable()),
    targets=st.dictionaries(st.sampled_from(list(TARGETS)), finite, max_size=len(TARGETS)),
    daily=st.none() | st.floats(min_value=0.01, max_value=1e9),
    start=st.none() | st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
)
def test_every_accepted_plan_round_trips(campaign, targets, daily, start):
    obj = {"campaign_id": campaign, "targets": targets}
    if daily is not None:
        obj["budget"] = {"daily": daily}
    if start is not None:
        obj["flight"] = {"start": start.isoformat()}
    plan = validate_plan(obj)
    assert isinstance(plan, Plan)
    assert validate_plan(plan.to_json()) == plan


CSV = """\ufeffcampaign_id,channel,target_cpa,target_ctr,daily_budget,flight_start,timezone,owner
spring-sale,,40,0.02,500,2026-11-01,Europe/Berlin,ana
,display,,0.002,,,,
bad-ctr,,,2%,,,,
bad-zone,,,,,,Berlin,
spring-sale,,41,,,,,
late,,30,,,2026-13-01,,

long,,1,,,,,,,extra
short,,1
autumn,,25.5,,,,America/New_York,
"""


def test_a_csv_names_every_bad_row_and_keeps_the_good_ones():
    read = read_plans(CSV, "csv")
    assert [(line, plan.campaign or plan.channel) for line, plan in read.plans] == [
        (2, "spring-sale"),
        (3, "display"),
        (10, "short"),  # trailing empty cells left out, as spreadsheets write them
        (11, "autumn"),
    ]
    assert [(e.line, e.reason.split(" ")[0]) for e in read.errors] == [
        (4, "targets.ctr"),
        (5, "timezone"),
        (6, "spring-sale"),
        (7, "flight.start"),
        (9, "10"),  # 10 cells, the header has 8
    ]
    assert "planned on line 2 already" in read.errors[2].reason
    assert read.plans[0][1].targets == {"cpa": 40.0, "ctr": 0.02}


def test_a_csv_with_an_unknown_column_is_refused_whole():
    with pytest.raises(FileRefused, match="unknown CSV column 'target_cpm'"):
        read_plans("campaign_id,target_cpm\na,3\n", "csv")


def test_jsonl_and_yaml_name_their_lines():
    jsonl = '{"campaign_id": "a", "targets": {"cpa": 10}}\n\n{oops\n{"campaign_id": "b", "budget": {"daily": -1}}\n'
    read = read_plans(jsonl, "jsonl")
    assert [p.campaign for _, p in read.plans] == ["a"]
    assert [e.line for e in read.errors] == [3, 4]
    yaml_text = """plans:
  - campaign_id: a
    flight: {start: 2026-11-01, end: 2026-11-30}
    timezone: Asia/Tokyo
  - campaign_id: b
    targets:
      ctr: 7
"""
    read = read_plans(yaml_text, "yaml")
    assert [(line, p.flight_end) for line, p in read.plans] == [(2, date(2026, 11, 30))]
    assert read.errors[0].line == 5 and "targets.ctr" in read.errors[0].reason


def test_file_formats_by_name():
    assert [format_of(n) for n in ("p.CSV", "p.jsonl", "p.yml")] == ["csv", "jsonl", "yaml"]
    with pytest.raises(FileRefused):
        format_of("plans.xlsx")


def test_csv_cells_stay_text_until_validated():
    assert from_csv_row({"campaign_id": "a", "target_cpa": "1,5"})["targets"] == {"cpa": "1,5"}
    assert "must be a number" in validate_plan(
        from_csv_row({"campaign_id": "a", "target_cpa": "1,5"})
    )


def test_a_flight_is_taken_whole_from_the_campaign_or_its_channel_default():
    """A campaign's own flight end merged field by field with its channel's start made a flight
    nobody planned (an end before its start: budget used 0)."""
    from datetime import date

    from stream.plans import Plan, channel_key, effective_plan

    default = Plan(None, "search", {"cpa": 10.0}, {}, date(2026, 6, 1), date(2026, 6, 30), None, {})
    own_end = Plan("c1", None, {}, {}, None, date(2026, 5, 15), None, {})
    plans = {channel_key("search"): default, "c1": own_end}
    merged = effective_plan(plans, "c1", "search")
    assert merged is not None
    assert (merged.flight_start, merged.flight_end) == (None, date(2026, 5, 15))
    assert merged.targets == {"cpa": 10.0}  # targets still field by field
    no_flight = Plan("c2", None, {"cpa": 5.0}, {}, None, None, None, {})
    plans["c2"] = no_flight
    merged = effective_plan(plans, "c2", "search")
    assert merged is not None
    assert (merged.flight_start, merged.flight_end) == (date(2026, 6, 1), date(2026, 6, 30))
