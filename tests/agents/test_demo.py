import random

import orjson

from agents.demo import CTR_COLLAPSE_CAMPAIGN, UNCONTACTED_CAMPAIGN, Scenario
from autopause.evaluate import Figures, WindowFigures, evaluate
from autopause.runner import load_rules
from stream.events import EVENT_TYPES
from stream.settings import Settings


def run_scenario(seconds: int, start_ms: int = 1_790_000_040_000):
    rng = random.Random(1)
    scenario = Scenario.default(start_ms, rng, incident_after_s=60)
    by_minute = []
    for minute in range(seconds // 60):
        counts: dict = {}
        for second in range(60):
            now = start_ms + (minute * 60 + second + 1) * 1000
            for event_type, key, _value in scenario.tick(now, 1.0, rng):
                counts[(key.decode(), event_type)] = counts.get((key.decode(), event_type), 0) + 1
        by_minute.append(counts)
    return scenario, by_minute


def test_incidents_happen_after_the_scripted_time():
    _scenario, minutes = run_scenario(240)
    before, after = minutes[0], minutes[3]

    def ctr(m, c):
        return m.get((c, "click"), 0) / max(1, m.get((c, "impression"), 0))

    assert ctr(before, CTR_COLLAPSE_CAMPAIGN) > 0.015
    assert ctr(after, CTR_COLLAPSE_CAMPAIGN) < 0.005
    assert ctr(after, "camp-05") > 0.015  # healthy campaigns stay healthy
    assert after.get((UNCONTACTED_CAMPAIGN, "lead"), 0) > 0


def test_leads_after_the_incident_are_never_contacted():
    rng = random.Random(3)
    start = 1_790_000_040_000
    scenario = Scenario.default(start, rng, incident_after_s=60)
    late_leads, contacted = set(), set()
    for second in range(1, 30 * 60):
        now = start + second * 1000
        for event_type, key, value in scenario.tick(now, 1.0, rng):
            body = orjson.loads(value)
            if key.decode() != UNCONTACTED_CAMPAIGN or "lead_id" not in body:
                continue
            if event_type == "lead" and now > start + 61_000:
                late_leads.add(body["lead_id"])
            if event_type == "sales_contact":
                contacted.add(body["lead_id"])
    assert late_leads and contacted and not (late_leads & contacted)


def test_messages_are_valid_json_keyed_by_campaign():
    rng = random.Random(2)
    scenario = Scenario.default(1_790_000_040_000, rng)
    for event_type, key, value in scenario.tick(1_790_000_041_000, 1.0, rng):
        body = orjson.loads(value)
        assert body["campaign_id"] == key.decode() and body["event_type"] == event_type


def test_the_demo_plans_are_valid_and_judge_the_ctr_incident_alone():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from agents.demo import OVERSPEND_CAMPAIGN, midday_zone
    from stream.plans import validate_plan

    scenario, minutes = run_scenario(240)
    plans = scenario.plans(scenario.started_ms)
    assert all(validate_plan(p.to_json()) == p for p in plans)
    defaults = {p.channel: p for p in plans if p.campaign is None}
    assert defaults["search"].targets["ctr"] > 10 * defaults["display"].targets["ctr"]
    (shipped,) = [r for r in load_rules(Settings()) if r.name == "ctr_collapse"]
    for c in scenario.campaigns:  # the shipped rule, on the minutes since the incident
        counts = tuple(sum(m.get((c.name, t), 0) for m in minutes[1:]) for t in EVENT_TYPES)
        figures = Figures({"15m": WindowFigures(counts)}, targets=defaults[c.channel].targets)
        collapsed = evaluate(shipped, figures).holds
        assert collapsed == (c.name == CTR_COLLAPSE_CAMPAIGN), c.name
    hot = next(p for p in plans if p.campaign == OVERSPEND_CAMPAIGN)
    assert hot.budgets["daily"] > 0
    assert (
        minutes[3][(OVERSPEND_CAMPAIGN, "impression")]
        > 3 * minutes[0][(OVERSPEND_CAMPAIGN, "impression")]
    )
    for hour in range(24):
        now_ms = 1_790_000_000_000 - 1_790_000_000_000 % 86_400_000 + hour * 3_600_000 + 59_000
        assert datetime.fromtimestamp(now_ms / 1000, ZoneInfo(midday_zone(now_ms))).hour == 12
