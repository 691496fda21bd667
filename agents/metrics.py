"""All Prometheus metrics, built in one place against the registry passed in.

KPI values are not kept in metric objects: ``KpiExporter`` reads the partition states at scrape
time, so a worker exports exactly the partitions it owns and series of lost partitions vanish.
Counters whose truth lives in the state (events, rejections, late, duplicates, folds) are exported
from the state too, so they survive a crash exactly.

The KPI families are written by ``stream.exposition`` (hand-written text format, rows cached per
campaign) rather than by prometheus_client, whose ~10 µs per series would stall the worker for
seconds at thousands of campaigns. ``KpiExporter`` is still a ``Collector`` (it parses its own
text), so a registry can read KPI samples in tests and tools; ``/metrics`` uses the fast path.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass

from faust.sensors import Monitor as FaustMonitor
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from stream import catalogue as m
from stream import exposition
from stream.baselines import BaselineRef
from stream.catalogue import MetricSpec
from stream.settings import Settings
from stream.snapshot import CampaignRow, RowCache, Snapshot, build_rows, snapshot_header

log = logging.getLogger("kpi_monitor")

# How long the exporter works before it lets the event loop run other tasks.
RENDER_SLICE_SECONDS = 0.005
YOUNG_ROWS = 500  # rows rebuilt between two young collections (~70 tracked objects a row)


@dataclass
class PipelineMetrics:
    """Process-local counters about the worker itself (they restart at zero with the process)."""

    batches: Counter
    messages_replayed: Counter
    messages_unowned: Counter
    batch_seconds: Histogram
    dead_letters: Counter
    records_failed: Counter  # by topic (bounded: the input topics and the plans topic)
    local_store_fallbacks: Counter  # by reason (agents.local_store.FALLBACK_REASONS)
    loop_lag_seconds: Histogram
    gc_pause_seconds: Histogram  # by generation
    scrape_seconds: Histogram


def build_pipeline_metrics(registry: CollectorRegistry) -> PipelineMetrics:
    def counter(spec: MetricSpec) -> Counter:
        return Counter(spec.name, spec.doc, spec.labels, registry=registry)

    def histogram(spec: MetricSpec, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(spec.name, spec.doc, spec.labels, buckets=buckets, registry=registry)

    seconds = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
    return PipelineMetrics(
        batches=counter(m.BATCHES),
        messages_replayed=counter(m.MESSAGES_REPLAYED),
        messages_unowned=counter(m.MESSAGES_UNOWNED),
        batch_seconds=histogram(
            m.BATCH_SECONDS, (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
        ),
        dead_letters=counter(m.DEAD_LETTERS),
        records_failed=counter(m.RECORDS_FAILED),
        local_store_fallbacks=counter(m.LOCAL_STORE_FALLBACKS),
        loop_lag_seconds=histogram(m.LOOP_LAG_SECONDS, seconds),
        gc_pause_seconds=histogram(
            m.GC_PAUSE_SECONDS, (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
        ),
        scrape_seconds=histogram(m.RENDER_SECONDS, seconds),
    )


class KpiExporter(Collector):
    """The KPI snapshot of the owned partitions, as rows, text exposition, or metric families."""

    def __init__(
        self,
        states: Callable[[], list],
        settings: Settings,
        clock: Callable[[], int],
        baselines: tuple[BaselineRef, ...] = (),
    ) -> None:
        self._states = states
        self._baselines = baselines  # that the rules read (kpi_baseline)
        self._settings = settings
        self._clock = clock
        self._cache = RowCache()
        self._built_at_collection = 0
        self._lock = asyncio.Lock()  # one sliced build at a time: they share the row cache
        self._windows_ms = tuple(sorted(w * 1000 for w in settings.windows_seconds))
        self.window_labels = exposition.window_labels(self._windows_ms)

    @property
    def export(self) -> str:
        return self._settings.export

    def _start(self, only: Collection[str] | None = None) -> tuple[Snapshot, Iterator]:
        states = list(self._states())
        snap = snapshot_header(states, self._clock(), self._windows_ms)
        rows = build_rows(
            states,
            snap.now_ms,
            self._settings.bucket_seconds * 1000,
            self._windows_ms,
            self._cache,
            self._settings.timezone,
            self._baselines,
            only=only,
        )
        return snap, rows

    async def rows_of(self, campaigns: Collection[str]) -> tuple[Snapshot, list[CampaignRow]]:
        """The header of a snapshot and the rows of ``campaigns`` alone (from the row cache)."""
        async with self._lock:
            snap, rows = self._start(only=campaigns)
            return snap, list(rows)

    def states(self) -> list:
        return list(self._states())

    def snapshot(self) -> Snapshot:
        snap, rows = self._start()
        snap.rows = list(rows)
        return snap

    async def snapshot_async(self, *, render: bool = False) -> Snapshot:
        """As :meth:`snapshot`, yielding to the event loop every ``RENDER_SLICE_SECONDS``; with
        ``render``, each row's text is prepared in the same slices."""
        async with self._lock:
            snap, rows = self._start()
            slice_end = time.perf_counter() + RENDER_SLICE_SECONDS
            for row in rows:
                if render:
                    exposition.render_row(row, self.export, self.window_labels)
                snap.rows.append(row)
                if time.perf_counter() > slice_end:
                    self._collect_young_rows()
                    await asyncio.sleep(0)
                    slice_end = time.perf_counter() + RENDER_SLICE_SECONDS
            self._collect_young_rows()
            return snap

    def _collect_young_rows(self) -> None:
        """A young collection once ``YOUNG_ROWS`` rows were rebuilt since the last one.

        A rebuilt row frees the old row's objects as it allocates its own, and CPython counts
        allocations net of frees: its own young collection came only once some 200,000 row
        objects were young, and walked them in one go (~230 ms at 5,000 campaigns). Here it
        walks a few hundred rows' worth (the survivors go straight to the old generation)."""
        built = self._cache.misses - self._cache.carries  # rows built, not carried
        if built - self._built_at_collection >= YOUNG_ROWS:
            self._built_at_collection = built
            gc.collect(1)

    async def refresh_after_boundaries(self, *, delay_seconds: float = 0.2) -> None:
        """Forever: just after each bucket boundary, rebuild the cached rows (and their text).

        Every window moves at a boundary, so every row is stale then; built here, in the same
        5 ms slices, the next scrape costs what a scrape between boundaries costs (the rows
        that changed since) instead of a whole rebuild.
        """
        bucket_ms = self._settings.bucket_seconds * 1000
        while True:
            now = self._clock()
            await asyncio.sleep((bucket_ms - now % bucket_ms) / 1000 + delay_seconds)
            try:
                await self.snapshot_async(render=True)
            except Exception:  # a failed refresh only costs the next scrape its cached rows
                log.exception("refreshing KPI rows after a bucket boundary failed")

    def text(self) -> str:
        return exposition.render(self.snapshot(), self.export)

    async def parts_async(self) -> list[bytes]:
        """The KPI families, encoded, in pieces; the event loop runs every
        ``RENDER_SLICE_SECONDS``. Never joined here: joining 30 MB (12,000 campaigns) holds the
        loop ~15 ms per copy, and a web page can write the pieces as they are."""
        snap = await self.snapshot_async(render=True)
        parts = []
        slice_end = time.perf_counter() + RENDER_SLICE_SECONDS
        for part in exposition.render_parts(snap, self.export):
            parts.append(part.encode())
            if time.perf_counter() > slice_end:
                await asyncio.sleep(0)
                slice_end = time.perf_counter() + RENDER_SLICE_SECONDS
        return parts

    def describe(self) -> list[Metric]:
        return []  # families depend on state; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        yield from text_string_to_metric_families(self.text())


class WorkerCollector(Collector):
    """Partitions owned, consumer lag and campaigns split over partitions, read at scrape time."""

    def __init__(
        self,
        partitions: Callable[[], int],
        lag: Callable[[], dict[tuple[str, int], int]] | None = None,
        split_campaigns: Callable[[], int] | None = None,
    ) -> None:
        self._partitions = partitions
        self._lag = lag
        self._split_campaigns = split_campaigns

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        owned = GaugeMetricFamily(m.PARTITIONS_OWNED.name, m.PARTITIONS_OWNED.doc)
        owned.add_metric([], self._partitions())
        yield owned
        if self._split_campaigns is not None:
            split = GaugeMetricFamily(m.CAMPAIGNS_SPLIT.name, m.CAMPAIGNS_SPLIT.doc)
            split.add_metric([], self._split_campaigns())
            yield split
        if self._lag is not None:
            lag = GaugeMetricFamily(
                m.CONSUMER_LAG.name, m.CONSUMER_LAG.doc, labels=list(m.CONSUMER_LAG.labels)
            )
            for (topic, partition), value in sorted(self._lag().items()):
                lag.add_metric([topic, str(partition)], value)
            yield lag


class FaustStatsCollector(Collector):
    """Faust's own throughput, commit and consumer-position figures, read from ``app.monitor`` at
    scrape time. (Faust's PrometheusMonitor updates labelled metrics on every event, which cost
    ~10% of the worker's CPU here; the built-in Monitor keeps the same figures anyway.)"""

    def __init__(self, monitor_of: Callable[[], FaustMonitor | None]) -> None:
        self._monitor_of = monitor_of

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self._monitor_of()
        if m is None:
            return
        yield _counter_by(
            "faust_messages_received",
            "Messages received, by topic",
            "topic",
            m.messages_received_by_topic,
        )
        yield _counter_by(
            "faust_messages_sent",
            "Messages produced, by topic (incl. changelogs)",
            "topic",
            m.messages_sent_by_topic,
        )
        events = CounterMetricFamily("faust_events", "Events through Faust streams")
        events.add_metric([], m.events_total)
        yield events
        for name, doc, value in (
            ("faust_messages_per_second", "Faust's own recent message rate", m.messages_s),
            ("faust_events_per_second", "Faust's own recent event rate", m.events_s),
            ("faust_events_active", "Events being processed now", m.events_active),
            (
                "faust_event_runtime_avg_seconds",
                "Average event processing time",
                m.events_runtime_avg,
            ),
            (
                "faust_commit_latency_avg_seconds",
                "Average offset commit latency",
                _mean(m.commit_latency),
            ),
            ("faust_send_latency_avg_seconds", "Average produce latency", _mean(m.send_latency)),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            yield gauge
        positions = (
            ("faust_committed_offset", "Last committed offset", m.tp_committed_offsets),
            ("faust_read_offset", "Last read offset", m.tp_read_offsets),
            ("faust_end_offset", "Log end offset known to Faust", m.tp_end_offsets),
        )
        for name, doc, offsets in positions:
            gauge = GaugeMetricFamily(name, doc, labels=["topic", "partition"])
            for tp, offset in sorted(offsets.items()):
                gauge.add_metric([tp.topic, str(tp.partition)], offset)
            yield gauge


def _counter_by(
    name: str, doc: str, label: str, counts: Mapping[str, float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def _mean(values) -> float:
    values = list(values or ())
    return sum(values) / len(values) if values else 0.0
