"""The KPI exposition over plain partition states, read back through prometheus_client's parser
with a fresh registry per test."""

import asyncio
from collections import Counter as Tally

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from agents.kpis_json import snapshot_json
from agents.metrics import KpiExporter
from stream.events import EVENT_TYPES
from stream.exposition import LEAN_SERIES_PER_CAMPAIGN
from stream.horizons import HORIZONS
from stream.settings import Settings
from stream.state import StateConfig
from tests.factories import NOW_MS, event, kind, raw
from tests.state_harness import CONFIG, as_messages, run

MIN = 60_000


DEFAULTS = Settings()


def exporter(states, settings=DEFAULTS):
    return KpiExporter(lambda: states, settings, lambda: NOW_MS)


def scrape(states, settings=DEFAULTS):
    """Families by name, through a registry as any prometheus_client user would read them."""
    registry = CollectorRegistry()
    registry.register(exporter(states, settings))
    return registry, {f.name: f for f in registry.collect()}


def samples(family, **labels):
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def state_of(*events, config=CONFIG):
    state, _ = run(as_messages([(kind(e["event_type"]), raw(e)) for e in events]), config=config)
    return state


def busy_campaign(campaign="c1"):
    """Every event type in every window, a lead awaiting contact and an unmatched contact."""
    return [
        event("impression", campaign=campaign, cost=0.01),
        event("click", campaign=campaign),
        event("lead", campaign=campaign, lead_id="A", at_ms=NOW_MS - 20 * MIN),
        event("sales_contact", campaign=campaign, lead_id="A", at_ms=NOW_MS - 2 * MIN),
        event("lead", campaign=campaign, lead_id="B", at_ms=NOW_MS - 3 * MIN),
        event("sales_contact", campaign=campaign, lead_id="Z"),
        event("sale", campaign=campaign, value=20, at_ms=NOW_MS - 40 * MIN),
    ]


def test_names_follow_prometheus_conventions():
    registry, families = scrape([state_of(event("impression"), event("click"))])
    assert families["kpi_events"].type == "counter"
    assert families["kpi_window_events"].type == "gauge"
    assert families["kpi_sales_response_seconds"].type == "histogram"
    names = {s.name for f in families.values() for s in f.samples}
    assert "kpi_events_total" in names and "kpi_events_rejected_total" not in names  # none rejected
    assert (
        registry.get_sample_value("kpi_events_total", {"campaign": "c1", "event_type": "click"})
        == 1
    )


def test_lean_export_stays_within_the_series_budget_per_campaign():
    campaigns = [f"c{i}" for i in range(20)]
    state = state_of(*[e for c in campaigns for e in busy_campaign(c)])
    _, families = scrape([state])
    per_campaign = Tally(
        s.labels["campaign"] for f in families.values() for s in f.samples if "campaign" in s.labels
    )
    assert set(per_campaign) == set(campaigns)
    # Without a plan: no flight horizon, no plan or pacing series.
    assert max(per_campaign.values()) == 35 + 3 * 6 < LEAN_SERIES_PER_CAMPAIGN
    # A typical plan (two targets and a daily budget) keeps a campaign within 60 series.
    typical = {"campaign_id": "c0", "targets": {"cpa": 40, "ctr": 0.02}, "budget": {"daily": 50}}
    assert state.apply_plan(0, b"c0", orjson.dumps(typical)) is None
    _, families = scrape([state])
    planned = Tally(
        s.labels["campaign"] for f in families.values() for s in f.samples if "campaign" in s.labels
    )
    assert planned["c0"] == 35 + 3 * 6 + 2 + 1 + 1 + 1 + 2 <= 60  # targets, budget, info, day
    _, full = scrape([state], Settings(export="full"))
    full_per_campaign = Tally(
        s.labels["campaign"] for f in full.values() for s in f.samples if "campaign" in s.labels
    )
    assert min(full_per_campaign.values()) > 80  # every ratio, bound and histogram bucket
    assert "kpi_ctr_ratio" in full and "kpi_ctr_ratio" not in families


def test_histogram_is_cumulative_with_seconds():
    state = state_of(
        event("lead", lead_id="A", at_ms=NOW_MS - 30 * MIN),
        event("sales_contact", lead_id="A", at_ms=NOW_MS - 29 * MIN),
        event("lead", lead_id="B", at_ms=NOW_MS - 30 * MIN),
        event("sales_contact", lead_id="B", at_ms=NOW_MS - 10 * MIN),
    )
    for export, labels in (("lean", {}), ("full", {"campaign": "c1"})):
        histogram = scrape([state], Settings(export=export))[1]["kpi_sales_response_seconds"]
        by_le = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
        assert (
            by_le["60.0"] == 1
            and by_le["900.0"] == 1
            and by_le["1800.0"] == 2
            and by_le["+Inf"] == 2
        )
        total = [s for s in histogram.samples if s.name.endswith("_sum")]
        assert total[0].labels == labels and total[0].value == 60 + 1200


def test_campaigns_beyond_the_partition_budget_fold_into_other_at_ingest():
    config = CONFIG._replace(max_campaigns=2)
    state = state_of(
        *[event("impression", campaign=f"c{i}") for i in range(5)],
        *[event("click", campaign=f"c{i}") for i in range(5)],
        config=config,
    )
    registry, families = scrape([state])
    campaigns = {s.labels["campaign"] for s in families["kpi_window_events"].samples}
    assert campaigns == {"c0", "c1", "__other__"}
    assert (
        registry.get_sample_value(
            "kpi_window_events",
            {"campaign": "__other__", "event_type": "impression", "window": "5m"},
        )
        == 3
    )
    assert registry.get_sample_value("kpi_events_folded_total", {"budget": "campaign"}) == 6
    assert registry.get_sample_value("kpi_campaigns_tracked") == 2


def test_other_is_merged_across_partitions():
    config = CONFIG._replace(max_campaigns=1)
    states = []
    for partition in range(3):
        state, _ = run(
            as_messages(
                [(0, raw(event("impression", campaign=f"p{partition}-{i}"))) for i in range(3)]
            ),
            config=config,
        )
        state.partition = partition
        states.append(state)
    registry, _ = scrape(states)
    assert (
        registry.get_sample_value(
            "kpi_events_total", {"campaign": "__other__", "event_type": "impression"}
        )
        == 6
    )


def test_awaiting_and_oldest_age():
    registry, _ = scrape(
        [
            state_of(
                event("lead", lead_id="A", at_ms=NOW_MS - 120_000),
                event("lead", lead_id="B", at_ms=NOW_MS - 60_000),
            )
        ]
    )
    assert registry.get_sample_value("kpi_leads_awaiting_contact", {"campaign": "c1"}) == 2
    assert (
        registry.get_sample_value("kpi_oldest_uncontacted_lead_age_seconds", {"campaign": "c1"})
        == 120
    )


@pytest.mark.parametrize("campaign", ['quote"d', "back\\slash", "ünïcode", "{braces}", "emoji 😀"])
def test_any_campaign_id_survives_the_text_format(campaign):
    registry, _ = scrape(
        [state_of(event("impression", campaign=campaign, channel='ch"1'))], Settings(export="full")
    )
    assert (
        registry.get_sample_value(
            "kpi_events_total",
            {"campaign": campaign, "channel": 'ch"1', "event_type": "impression"},
        )
        == 1
    )


def test_rows_are_rebuilt_only_when_a_campaign_changes():
    state = state_of(*busy_campaign("a"), *busy_campaign("b"))
    exp = exporter([state])
    first = exp.text()
    exp.text()
    assert exp._cache.misses == 2 and exp._cache.hits == 2
    run([(kind("impression"), 100, raw(event("impression", campaign="a")))], state=state)
    second = exp.text()
    assert exp._cache.misses == 3 and first != second


CAMPAIGNS = ["a", "b", "c", "d"]


@st.composite
def events(draw):
    event_type = draw(st.sampled_from(EVENT_TYPES))
    fields = {}
    if event_type in ("lead", "sales_contact"):
        fields["lead_id"] = draw(st.sampled_from(["L1", "L2", "L3"]))
    if event_type in ("impression", "click"):
        fields["cost"] = draw(st.sampled_from([0, 0.01, 1.25]))
    if event_type == "sale":
        fields["value"] = draw(st.sampled_from([1, 9.99]))
    return event(
        event_type,
        campaign=draw(st.sampled_from(CAMPAIGNS)),
        at_ms=NOW_MS - draw(st.integers(0, 80 * MIN)),
        channel=draw(st.sampled_from(["search", "social"])),
        **fields,
    )


@settings(max_examples=50)
@given(st.lists(events(), max_size=60), st.sampled_from(["lean", "full"]))
def test_exposition_parsed_back_equals_the_snapshot(evs, export):
    state = state_of(*evs, config=CONFIG._replace(max_campaigns=3))
    exp = exporter([state], Settings(export=export))
    parsed = {}
    for family in text_string_to_metric_families(exp.text()):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in parsed, f"series {key} exported twice"
            parsed[key] = s.value
    data = snapshot_json(exp.snapshot())
    for campaign, entry in data["campaigns"].items():
        for window, figures in entry["windows"].items():
            for event_type, count in figures["events"].items():
                if window in HORIZONS and (window == "flight" or event_type == "sales_contact"):
                    continue  # not exported over the long horizons (stream.exposition)
                key = (
                    "kpi_window_events",
                    (("campaign", campaign), ("event_type", event_type), ("window", window)),
                )
                assert parsed[key] == count
            for name, field in (("kpi_window_revenue", "revenue"), ("kpi_window_spend", "spend")):
                assert parsed[
                    (name, (("campaign", campaign), ("window", window)))
                ] == pytest.approx(figures[field])
            p95 = parsed.get(
                ("kpi_sales_response_p95_seconds", (("campaign", campaign), ("window", window)))
            )
            assert p95 == figures["sales_response_p95_seconds"]
            if export == "full":
                ctr = parsed.get(("kpi_ctr_ratio", (("campaign", campaign), ("window", window))))
                assert ctr == figures["ctr"]
        totals = {
            t: parsed.get(("kpi_events_total", (("campaign", campaign), ("event_type", t))))
            for t in EVENT_TYPES
        }
        if export == "lean":
            assert totals == entry["events_total"]
    assert sum(v for (name, _), v in parsed.items() if name == "kpi_events_total") == sum(
        sum(e["events_total"].values()) for e in data["campaigns"].values()
    )


def test_state_config_default_budget_matches_settings():
    assert StateConfig().max_campaigns == Settings().max_campaigns_per_partition


@settings(max_examples=40)
@given(st.lists(events(), max_size=60), st.lists(st.integers(0, 3 * MIN), min_size=1, max_size=6))
def test_cached_rows_equal_fresh_ones_as_the_clock_moves(evs, steps):
    """Rows and response windows carried over from earlier scrapes (and moved on by whole
    buckets) render exactly what a cold exporter renders."""
    state = state_of(*evs)
    clock = [NOW_MS]
    cached = KpiExporter(lambda: [state], Settings(), lambda: clock[0])
    cached.text()
    for step in steps:
        clock[0] += step
        fresh = KpiExporter(lambda: [state], Settings(), lambda: clock[0])
        assert cached.text() == fresh.text()


def test_response_windows_move_on_bucket_by_bucket():
    """A contact in every minute: each window loses one and gains one as the clock moves."""
    evs = []
    for minute in range(130):
        at = NOW_MS - 60 * MIN + minute * MIN
        evs += [
            event("lead", lead_id=f"L{minute}", at_ms=at - (minute % 7 + 1) * MIN),
            event("sales_contact", lead_id=f"L{minute}", at_ms=at),
        ]
    state = state_of(*evs)
    clock = [NOW_MS]
    cached = KpiExporter(lambda: [state], Settings(), lambda: clock[0])
    for _ in range(75):
        clock[0] += MIN
        fresh = KpiExporter(lambda: [state], Settings(), lambda: clock[0])
        assert cached.text() == fresh.text()
    assert cached._cache.hits == 0  # every scrape was in a new bucket: rows rebuilt, windows moved


async def test_rows_are_rebuilt_in_the_background_just_after_a_bucket_boundary():
    """The scrape after a boundary finds every row built for the new bucket."""
    state = state_of(*busy_campaign("a"), *busy_campaign("b"))
    clock = [NOW_MS]
    exp = KpiExporter(lambda: [state], Settings(), lambda: clock[0])
    exp.text()
    clock[0] = (NOW_MS // MIN + 1) * MIN - 5  # 5 ms before the next boundary
    refresher = asyncio.ensure_future(exp.refresh_after_boundaries(delay_seconds=0))
    await asyncio.sleep(0.001)
    clock[0] += 10  # the boundary has passed when the refresher wakes
    await asyncio.sleep(0.05)
    refresher.cancel()
    misses = exp._cache.misses
    assert misses == 4  # two campaigns, cold, then again for the new bucket
    fresh = KpiExporter(lambda: [state], Settings(), lambda: clock[0])
    assert exp.text() == fresh.text() and exp._cache.misses == misses


def test_a_plan_exports_targets_budgets_pacing_and_the_long_horizons():
    state = state_of(
        event("click", cost=30, at_ms=NOW_MS - 10 * MIN),  # today (UTC: since 00:00)
        event("click", cost=50, at_ms=NOW_MS - 20 * 60 * MIN),  # yesterday: in 7d, not today
        event("sale", value=200, at_ms=NOW_MS - 3 * 1440 * MIN),  # late for the minutes
    )
    plan = {
        "campaign_id": "c1",
        "targets": {"cpa": 40, "ctr": 0.02},
        "budget": {"daily": 100, "total": 1000},
        "flight": {"start": "2026-09-15", "end": "2026-09-30"},
        "labels": {"owner": "anna", "team": "emea"},
    }
    assert state.apply_plan(0, b"c1", orjson.dumps(plan)) is None
    _, families = scrape([state])

    def value(name, **labels):
        (sample,) = samples(families[name], campaign="c1", **labels)
        return sample.value

    assert value("kpi_window_spend", window="today") == 30
    assert value("kpi_window_spend", window="7d") == 80
    assert value("kpi_window_revenue", window="7d") == 200
    assert value("kpi_window_events", window="30d", event_type="sale") == 1
    assert not samples(families["kpi_window_events"], window="flight")  # money only
    assert value("kpi_window_revenue", window="1h") == 0  # the sale is too old for the minutes
    assert value("kpi_window_spend", window="flight") == 80
    assert value("kpi_plan_target", kpi="cpa") == 40
    assert value("kpi_plan_budget", period="daily") == 100
    assert value("kpi_plan_info", owner="anna", team="emea", market="") == 1
    day_share = (14 * 60 + 14) / 1440  # 14:14 UTC
    assert value("kpi_budget_used_ratio", period="daily") == pytest.approx(0.3)
    assert value("kpi_budget_pacing_ratio", period="daily") == pytest.approx(0.3 / day_share)
    assert "kpi_projected_spend" not in families  # KPI_EXPORT=full
    flight_share = (6 + day_share) / 16
    assert value("kpi_budget_pacing_ratio", period="flight") == pytest.approx(
        80 / (1000 * flight_share)
    )
    as_json = snapshot_json(exporter([state]).snapshot())["campaigns"]["c1"]
    assert as_json["windows"]["7d"]["spend"] == 80 and as_json["plan"]["targets"]["cpa"] == 40
    assert as_json["pacing"]["budget_used_ratio"] == pytest.approx(0.3)


def test_a_plan_change_reaches_the_next_scrape():
    state = state_of(event("click", cost=1))
    metrics = exporter([state])
    snapshot_json(metrics.snapshot())  # rows now cached
    state.apply_plan(0, b"c1", orjson.dumps({"campaign_id": "c1", "targets": {"cpa": 9}}))
    assert snapshot_json(metrics.snapshot())["campaigns"]["c1"]["plan"]["targets"] == {"cpa": 9.0}


def test_a_flight_older_than_the_hour_buckets_is_not_reported_in_part():
    state = state_of(event("click", cost=5))
    plan = {"campaign_id": "c1", "budget": {"total": 100}, "flight": {"start": "2026-01-01"}}
    state.apply_plan(0, b"c1", orjson.dumps(plan))
    as_json = snapshot_json(exporter([state]).snapshot())["campaigns"]["c1"]
    assert "flight" not in as_json["windows"] and "30d" in as_json["windows"]
    assert as_json["pacing"]["flight_budget_used_ratio"] is None
