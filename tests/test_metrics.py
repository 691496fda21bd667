"""The Collector over plain partition states, with a fresh registry per test."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.metrics import KpiCollector
from stream.settings import Settings
from tests.factories import NOW_MS, event, kind, raw
from tests.state_harness import as_messages, run


def scrape(states, settings=Settings()):
    registry = CollectorRegistry()
    registry.register(KpiCollector(lambda: states, settings, lambda: NOW_MS))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    return families


def samples(family, **labels):
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def state_of(*events):
    state, _ = run(as_messages([(kind(e["event_type"]), raw(e)) for e in events]))
    return state


def test_names_follow_prometheus_conventions():
    families = scrape([state_of(event("impression"), event("click"))])
    assert families["kpi_events"].type == "counter"
    assert families["kpi_ctr_ratio"].type == "gauge"
    assert families["kpi_sales_response_seconds"].type == "histogram"
    names = {s.name for f in families.values() for s in f.samples}
    assert "kpi_events_total" in names and "kpi_events_rejected_total" not in names  # none rejected


def test_histogram_is_cumulative_with_seconds():
    state = state_of(event("lead", lead_id="A", at_ms=NOW_MS - 30 * 60_000),
                     event("sales_contact", lead_id="A", at_ms=NOW_MS - 29 * 60_000),
                     event("lead", lead_id="B", at_ms=NOW_MS - 30 * 60_000),
                     event("sales_contact", lead_id="B", at_ms=NOW_MS - 10 * 60_000))
    histogram = scrape([state])["kpi_sales_response_seconds"]
    by_le = {s.labels["le"]: s.value for s in histogram.samples if s.name.endswith("_bucket")}
    assert by_le["60.0"] == 1 and by_le["900.0"] == 1 and by_le["1800.0"] == 2 and by_le["+Inf"] == 2
    assert samples(histogram, campaign="c1")[-1].value == 60 + 1200  # _sum in seconds


def test_campaigns_beyond_the_limit_fold_into_other():
    state = state_of(*[event("impression", campaign=f"c{i}") for i in range(5)],
                     *[event("click", campaign=f"c{i}") for i in range(5)])
    families = scrape([state], Settings(max_campaigns=2))
    campaigns = {s.labels["campaign"] for s in families["kpi_ctr_ratio"].samples}
    assert campaigns == {"c0", "c1", "__other__"}
    other = samples(families["kpi_window_events"], campaign="__other__", event_type="impression",
                    window="5m")
    assert other[0].value == 3
    assert families["kpi_campaigns_folded"].samples[0].value == 3


def test_awaiting_and_oldest_age():
    families = scrape([state_of(event("lead", lead_id="A", at_ms=NOW_MS - 120_000),
                                event("lead", lead_id="B", at_ms=NOW_MS - 60_000))])
    assert families["kpi_leads_awaiting_contact"].samples[0].value == 2
    assert families["kpi_oldest_uncontacted_lead_age_seconds"].samples[0].value == 120
