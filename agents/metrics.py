"""All Prometheus metrics, built in one place against the registry passed in.

KPI values are not kept in metric objects: ``KpiCollector`` reads the partition states at scrape
time, so a worker exports exactly the partitions it owns and series of lost partitions vanish.
Counters whose truth lives in the state (events, rejections, late, duplicates) are exported from
the state too, so they survive a crash exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from stream.durations import format_duration
from stream.events import CLICK, EVENT_TYPES, IMPRESSION, LEAD, SALE
from stream.labels import LabelBudget
from stream.settings import Settings
from stream.snapshot import Snapshot, build_snapshot
from stream.state import HISTOGRAM_BOUNDS_SECONDS
from stream.wilson import wilson_bounds

RATIO_METRICS = (
    ("kpi_ctr_ratio", "ctr", "Click-through rate: clicks / impressions"),
    ("kpi_conversion_ratio", "conversion", "Conversion rate: sales / clicks"),
    ("kpi_lead_ratio", "lead_rate", "Lead rate: leads / clicks"),
    ("kpi_lead_to_sale_ratio", "lead_to_sale", "Lead-to-sale rate: sales / leads"),
    ("kpi_cpc", "cpc", "Cost per click: spend / clicks (reporting currency)"),
    ("kpi_cpl", "cpl", "Cost per lead: spend / leads (reporting currency)"),
    ("kpi_cpa", "cpa", "Cost per acquisition: spend / sales (reporting currency)"),
    ("kpi_roas_ratio", "roas", "Return on ad spend: revenue / spend"),
    ("kpi_aov", "aov", "Average order value: revenue / sales (reporting currency)"),
)

# Rate KPIs (successes, trials by event kind): these also get 95% Wilson bounds.
RATE_KPIS = {"ctr": (CLICK, IMPRESSION), "conversion": (SALE, CLICK), "lead_rate": (LEAD, CLICK),
             "lead_to_sale": (SALE, LEAD)}


@dataclass
class PipelineMetrics:
    """Process-local counters about the worker itself (they restart at zero with the process)."""

    batches: Counter
    messages_replayed: Counter
    messages_unowned: Counter
    batch_seconds: Histogram
    dead_letters: Counter


def build_pipeline_metrics(registry: CollectorRegistry) -> PipelineMetrics:
    return PipelineMetrics(
        batches=Counter("kpi_batches", "Batches processed by this worker process", registry=registry),
        messages_replayed=Counter(
            "kpi_messages_replayed",
            "Messages skipped because the state already held them (replay after restart)",
            registry=registry,
        ),
        messages_unowned=Counter(
            "kpi_messages_unowned", "Messages dropped for partitions this worker no longer owns",
            registry=registry,
        ),
        batch_seconds=Histogram(
            "kpi_batch_duration_seconds", "Time to fold one batch into state",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        ),
        dead_letters=Counter(
            "kpi_dead_letters_sent", "Rejected events sent to the dead-letter topic", registry=registry
        ),
    )


class KpiCollector(Collector):
    def __init__(
        self,
        states: Callable[[], list],
        settings: Settings,
        clock: Callable[[], int],
        lag: Callable[[], dict[tuple[str, int], int]] | None = None,
    ) -> None:
        self._states = states
        self._settings = settings
        self._clock = clock
        self._lag = lag
        self._campaigns = LabelBudget(settings.max_campaigns)
        self._channels = LabelBudget(100)

    def snapshot(self) -> Snapshot:
        s = self._settings
        return build_snapshot(
            self._states(), self._clock(), s.bucket_seconds * 1000,
            [w * 1000 for w in s.windows_seconds], self._campaigns, self._channels,
        )

    def describe(self) -> list[Metric]:
        return []  # families depend on state; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        yield from _counters(snap)
        yield from _windows(snap, self._settings)
        yield from _response(snap)
        owned = GaugeMetricFamily("kpi_partitions_owned",
                                  "Input partitions whose state this worker holds and exports")
        owned.add_metric([], len(self._states()))
        yield owned
        folded = GaugeMetricFamily(
            "kpi_campaigns_folded",
            "Campaigns beyond KPI_MAX_CAMPAIGNS exported as campaign=\"__other__\"",
        )
        folded.add_metric([], snap.folded_campaigns)
        yield folded
        if self._lag is not None:
            lag = GaugeMetricFamily("kpi_consumer_lag_messages",
                                    "Messages in the input partition not yet folded into state",
                                    labels=["topic", "partition"])
            for (topic, partition), value in sorted(self._lag().items()):
                lag.add_metric([topic, str(partition)], value)
            yield lag


class FaustStatsCollector(Collector):
    """Faust's own throughput, commit and consumer-position figures, read from ``app.monitor`` at
    scrape time. (Faust's PrometheusMonitor updates labelled metrics on every event, which cost
    ~10% of the worker's CPU here; the built-in Monitor keeps the same figures anyway.)"""

    def __init__(self, monitor_of: Callable[[], object]) -> None:
        self._monitor_of = monitor_of

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self._monitor_of()
        if m is None or getattr(m, "messages_received_by_topic", None) is None:
            return
        yield _counter_by("faust_messages_received", "Messages received, by topic", "topic",
                          m.messages_received_by_topic)
        yield _counter_by("faust_messages_sent", "Messages produced, by topic (incl. changelogs)",
                          "topic", m.messages_sent_by_topic)
        events = CounterMetricFamily("faust_events", "Events through Faust streams")
        events.add_metric([], m.events_total)
        yield events
        for name, doc, value in (
            ("faust_messages_per_second", "Faust's own recent message rate", m.messages_s),
            ("faust_events_per_second", "Faust's own recent event rate", m.events_s),
            ("faust_events_active", "Events being processed now", m.events_active),
            ("faust_event_runtime_avg_seconds", "Average event processing time", m.events_runtime_avg),
            ("faust_commit_latency_avg_seconds", "Average offset commit latency",
             _mean(m.commit_latency)),
            ("faust_send_latency_avg_seconds", "Average produce latency", _mean(m.send_latency)),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            yield gauge
        positions = (("faust_committed_offset", "Last committed offset", m.tp_committed_offsets),
                     ("faust_read_offset", "Last read offset", m.tp_read_offsets),
                     ("faust_end_offset", "Log end offset known to Faust", m.tp_end_offsets))
        for name, doc, offsets in positions:
            gauge = GaugeMetricFamily(name, doc, labels=["topic", "partition"])
            for tp, offset in sorted(offsets.items()):
                gauge.add_metric([tp.topic, str(tp.partition)], offset)
            yield gauge


def _counter_by(name: str, doc: str, label: str, counts: Mapping[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def _mean(values) -> float:
    values = list(values or ())
    return sum(values) / len(values) if values else 0.0


def _counters(snap: Snapshot) -> Iterator[Metric]:
    events = CounterMetricFamily("kpi_events", "Valid events counted, by campaign, channel and type",
                                 labels=["campaign", "channel", "event_type"])
    for (campaign, channel, kind), count in sorted(snap.events_total.items()):
        events.add_metric([campaign, channel, EVENT_TYPES[kind]], count)
    yield events
    yield _counter_by("kpi_events_rejected", "Events rejected to the dead-letter topic", "reason",
                      snap.rejected)
    yield _counter_by("kpi_events_late", "Events whose bucket had expired: in totals, in no window",
                      "event_type", dict(zip(EVENT_TYPES, snap.late)))
    yield _counter_by("kpi_events_duplicate",
                      "Events dropped as producer-side duplicates (same event_id)", "event_type",
                      dict(zip(EVENT_TYPES, snap.duplicate)))


def _windows(snap: Snapshot, settings: Settings) -> Iterator[Metric]:
    labels = ["campaign", "window"]
    window_events = GaugeMetricFamily("kpi_window_events", "Events in the trailing window",
                                      labels=["campaign", "event_type", "window"])
    revenue = GaugeMetricFamily("kpi_window_revenue", "Revenue in the trailing window", labels=labels)
    spend = GaugeMetricFamily("kpi_window_spend", "Spend in the trailing window", labels=labels)
    ratios = {attr: GaugeMetricFamily(name, doc, labels=labels) for name, attr, doc in RATIO_METRICS}
    bounds = {attr: (GaugeMetricFamily(f"{name}_lower", f"95% Wilson lower bound of {name}", labels=labels),
                     GaugeMetricFamily(f"{name}_upper", f"95% Wilson upper bound of {name}", labels=labels))
              for name, attr, _ in RATIO_METRICS if attr in RATE_KPIS}
    p50 = GaugeMetricFamily("kpi_sales_response_p50_seconds",
                            "Median lead-to-first-contact time of contacts in the window", labels=labels)
    p95 = GaugeMetricFamily("kpi_sales_response_p95_seconds",
                            "95th percentile lead-to-first-contact time in the window", labels=labels)
    for (campaign, window_ms), sums in sorted(snap.windows.items()):
        window = format_duration(window_ms // 1000)
        for kind, name in enumerate(EVENT_TYPES):
            window_events.add_metric([campaign, name, window], sums.counts[kind])
        revenue.add_metric([campaign, window], sums.revenue_micros / 1_000_000)
        spend.add_metric([campaign, window], sums.spend_micros / 1_000_000)
        for attr, value in snap.kpis(campaign, window_ms)._asdict().items():
            if value is not None:
                ratios[attr].add_metric([campaign, window], value)
        for attr, (successes, trials) in RATE_KPIS.items():
            interval = wilson_bounds(sums.counts[successes], sums.counts[trials])
            if interval is not None:
                bounds[attr][0].add_metric([campaign, window], interval[0])
                bounds[attr][1].add_metric([campaign, window], interval[1])
        for family, q in ((p50, 0.5), (p95, 0.95)):
            value = snap.response_quantile_seconds(campaign, window_ms, q)
            if value is not None:
                family.add_metric([campaign, window], value)
    yield window_events
    yield revenue
    yield spend
    yield from ratios.values()
    for lower, upper in bounds.values():
        yield lower
        yield upper
    yield p50
    yield p95


def _response(snap: Snapshot) -> Iterator[Metric]:
    histogram = HistogramMetricFamily(
        "kpi_sales_response_seconds", "Time from a lead to its first sales contact, once per lead",
        labels=["campaign"],
    )
    for campaign, (bins, sum_ms) in sorted(snap.histograms.items()):
        cumulative, buckets = 0, []
        for bound, count in zip(HISTOGRAM_BOUNDS_SECONDS, bins):
            cumulative += count
            buckets.append((str(float(bound)), cumulative))
        buckets.append(("+Inf", cumulative + bins[-1]))
        histogram.add_metric([campaign], buckets, sum_ms / 1000)
    yield histogram
    awaiting = GaugeMetricFamily("kpi_leads_awaiting_contact", "Leads with no sales contact yet",
                                 labels=["campaign"])
    oldest = GaugeMetricFamily("kpi_oldest_uncontacted_lead_age_seconds",
                               "Age of the oldest lead still awaiting its first contact",
                               labels=["campaign"])
    for campaign, count in sorted(snap.awaiting_contact.items()):
        awaiting.add_metric([campaign], count)
        oldest.add_metric([campaign], snap.oldest_awaiting_age_seconds(campaign))
    yield awaiting
    yield oldest
    unmatched = GaugeMetricFamily("kpi_sales_contacts_unmatched",
                                  "Sales contacts whose lead has not been seen", labels=["campaign"])
    for campaign, count in sorted(snap.unmatched_contacts.items()):
        unmatched.add_metric([campaign], count)
    yield unmatched
