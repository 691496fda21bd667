"""The Faust app: one agent over the five input topics, one changelogged state table.

The agent is thin: take a batch of raw messages, hand them to the pure pipeline, write the
records it returns, send rejections to the dead-letter topic.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import faust
from aiohttp.web import StreamResponse
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import disable_created_metrics
import orjson

from stream.settings import Settings

from .kafka_auth import faust_credentials

from .kpis_json import snapshot_json
from .loop_lag import LoopLagMonitor
from .memory import release_free_memory
from .metrics import (FaustStatsCollector, KpiExporter, PipelineMetrics, WorkerCollector,
                      build_pipeline_metrics)
from .pipeline import Message, Pipeline
from .table import PartitionedStateTable
from .transport import app_class

log = logging.getLogger("kpi_monitor")
STATE_TABLE = "kpi-state"
WRITE_CHUNK_BYTES = 256 * 1024


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Monitor:
    app: faust.App
    pipeline: Pipeline
    table: PartitionedStateTable
    registry: CollectorRegistry  # process and pipeline metrics; the KPI families come from exporter
    exporter: KpiExporter
    metrics: PipelineMetrics

    async def metrics_text(self) -> bytes:
        """The whole /metrics page: KPI families, then the registry's."""
        return b"".join(await self.metrics_parts())

    async def metrics_parts(self) -> list[bytes]:
        """The /metrics page in pieces, in order."""
        return [*await self.exporter.parts_async(), generate_latest(self.registry)]


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], int] = wall_clock_ms,
    registry: CollectorRegistry | None = None,
) -> Monitor:
    if settings.broker is None:
        raise ValueError("create_app needs settings.broker; the CLI starts the embedded one")
    disable_created_metrics()  # *_created series only add noise to dashboards
    registry = registry or CollectorRegistry()
    app = app_class(int(settings.fetch_max_wait_seconds * 1000))(
        settings.app_id,
        broker=settings.broker,
        store="memory://",
        datadir=settings.data_dir or f"/tmp/kpi-monitor-{settings.app_id}-{settings.web_port}",
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        topic_partitions=settings.partitions,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_seconds / 5),
        broker_rebalance_timeout=max(30.0, settings.session_timeout_seconds * 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_allow_declare=True,
        table_cleanup_interval=3600.0,
        consumer_max_fetch_size=8 * 1024 * 1024,
        broker_credentials=faust_credentials(settings),
    )

    pipeline = Pipeline(settings, clock)
    metrics = build_pipeline_metrics(registry)
    table = PartitionedStateTable(
        app, name=STATE_TABLE, partitions=settings.partitions, key_type=bytes, value_type=bytes,
    )
    app.tables.add(table)
    source = app.topic(*settings.topics.inputs(), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    rejected_topic = app.topic(settings.topics.rejected, key_type=bytes, value_type=bytes,
                               key_serializer="raw", value_serializer="raw")
    input_topics = set(settings.topics.inputs())

    def owned_partitions() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic in input_topics}

    async def on_recovered(tbl: PartitionedStateTable) -> None:
        partitions = owned_partitions()
        new = {tp.partition for tp in tbl.newly_assigned if tp.topic in input_topics}
        pipeline.assign(partitions, tbl.take_records(partitions), kept=partitions - new)
        _seek_to_checkpoints_after_faust_seeks(app, pipeline)
        log.info("owning partitions %s; resuming at %s", sorted(partitions),
                 pipeline.resume_positions())

    table.on_recovered = on_recovered

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: faust.App, revoked: set[TP], **kwargs: object) -> None:
        pipeline.revoke({tp.partition for tp in revoked if tp.topic in input_topics})

    @app.agent(source, name="ingest")
    async def ingest(stream: faust.Stream) -> None:
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_seconds):
            started = time.perf_counter()
            result = pipeline.process(
                Message(e.message.topic, e.message.partition, e.message.offset, e.message.value)
                for e in batch
            )
            await table.write(result.records)
            for letter in result.dead_letters:
                rejected_topic.send_soon(value=letter.rejection.original,
                                         headers=_dead_letter_headers(letter))
            metrics.batches.inc()
            metrics.messages_replayed.inc(result.replayed)
            metrics.messages_unowned.inc(result.unowned)
            metrics.dead_letters.inc(len(result.dead_letters))
            metrics.batch_seconds.observe(time.perf_counter() - started)

    @app.timer(interval=10.0)
    async def expire_old_state() -> None:
        await table.write(pipeline.expire())
        release_free_memory()

    def lag() -> dict[tuple[str, int], int]:
        if not app.in_worker:  # e.g. under test_context: there is no consumer to ask
            return {}
        positions = pipeline.resume_positions()
        out = {}
        for (topic, partition) in positions:
            tp = TP(topic, partition)
            if tp in app.consumer.assignment():
                highwater = app.consumer.highwater(tp)
                if highwater is not None:
                    out[(topic, partition)] = max(0, highwater - positions[(topic, partition)])
        return out

    exporter = KpiExporter(lambda: list(pipeline.states.values()), settings, clock)
    registry.register(WorkerCollector(lambda: len(pipeline.states), lag))
    registry.register(FaustStatsCollector(lambda: app.monitor if app.in_worker else None))
    monitor = Monitor(app, pipeline, table, registry, exporter, metrics)
    loop_lag = LoopLagMonitor(metrics.loop_lag_seconds.observe)
    last_render = {"seconds": 0.0}

    @app.task
    async def watch_event_loop() -> None:
        await loop_lag.run()

    @app.task
    async def refresh_rows_after_boundaries() -> None:
        await exporter.refresh_after_boundaries()

    @app.page("/metrics")
    async def metrics_page(web_view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        started = time.perf_counter()
        parts = await monitor.metrics_parts()
        last_render["seconds"] = time.perf_counter() - started
        metrics.scrape_seconds.observe(last_render["seconds"])
        # Written in pieces, never joined: one write of a whole page (12 MB at 5,000 campaigns)
        # held the event loop ~70 ms while the socket took it.
        response = StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        response.content_length = sum(len(part) for part in parts)
        await response.prepare(request)  # type: ignore[arg-type]
        for part in parts:
            view = memoryview(part)
            for start in range(0, len(part), WRITE_CHUNK_BYTES):
                await response.write(view[start:start + WRITE_CHUNK_BYTES])
        await response.write_eof()
        return response  # type: ignore[return-value]

    @app.page("/health")
    async def health_page(web_view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Cheap readiness/progress probe: owned partitions, events folded by this process, the
        longest event-loop stall since the previous probe, and the last /metrics render time."""
        body = {"partitions": sorted(pipeline.states), "events_folded": pipeline.events_folded,
                "campaigns": sum(s.admitted_campaigns for s in pipeline.states.values()),
                "loop_lag_worst_seconds": loop_lag.take_worst(),
                "last_metrics_render_seconds": last_render["seconds"]}
        return web_view.bytes(orjson.dumps(body), content_type="application/json")

    @app.page("/kpis")
    async def kpis_page(web_view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web_view.bytes(orjson.dumps(snapshot_json(await exporter.snapshot_async())),
                              content_type="application/json")

    return monitor


def _dead_letter_headers(letter) -> list[tuple[str, bytes]]:
    rejection = letter.rejection
    headers = [
        ("kpi.reason", rejection.reason.encode()),
        ("kpi.detail", rejection.detail.encode()),
        ("kpi.source.topic", letter.topic.encode()),
        ("kpi.source.partition", str(letter.partition).encode()),
        ("kpi.source.offset", str(letter.offset).encode()),
    ]
    if rejection.index is not None:
        headers.append(("kpi.source.index", str(rejection.index).encode()))
    return headers


def _seek_to_checkpoints_after_faust_seeks(app: faust.App, pipeline: Pipeline) -> None:
    """Make the consumer resume from the checkpoints kept in state.

    After recovery Faust seeks every partition to its committed offset. That offset can be ahead
    of the state (the embedded broker's wrong end offsets make a changelog restore stop short),
    and then events would be lost; or behind it (commits lag), and then work is repeated. So
    right after Faust's own seek we seek again to where the state says it is complete.
    """
    consumer = app.consumer
    if getattr(consumer, "_kpi_seek_installed", False):
        return
    faust_seek = consumer.perform_seek

    async def perform_seek() -> None:
        await faust_seek()
        assignment = consumer.assignment()
        for (topic, partition), offset in pipeline.resume_positions().items():
            tp = TP(topic, partition)
            if tp in assignment:
                await consumer.seek(tp, offset)

    consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    consumer._kpi_seek_installed = True  # type: ignore[attr-defined]
