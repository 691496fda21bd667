import random

import orjson

from agents.demo import CTR_COLLAPSE_CAMPAIGN, UNCONTACTED_CAMPAIGN, Scenario


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
    assert ctr(after, "camp-04") > 0.015  # healthy campaigns stay healthy
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
