"""The Faust app: the five input topics folded into one changelogged state table.

The fold is thin: take a batch of raw messages (a whole fetch from the consumer, or with
``KPI_INGEST=faust`` a batch of Faust's agent), hand it to the pure pipeline, write the records it
returns, send rejections to the dead-letter topic. Faust keeps the table, its changelog, the
consumer group, commits and the web server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import orjson
from aiohttp.web import StreamResponse
from faust.types import TP, StreamT
from faust.web.drivers.aiohttp import Web as AiohttpWeb
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)

from autopause.runner import baselines_read
from stream.events import INTERNAL_ERROR
from stream.settings import Settings
from stream.state import PartitionState

from . import page as live_page
from .auth import bearer_token_required
from .decisions import DecisionFeed, DecisionLoop
from .decisions import install as install_decisions
from .gc_pauses import (
    YOUNG_COLLECTION_SECONDS,
    GcPauseMonitor,
    collect_young_every,
    freeze_long_lived,
)
from .kafka_auth import faust_credentials
from .lag import caught_up, consumer_lag
from .local_store import (
    FALLBACK_REASONS,
    Identity,
    LocalStore,
    local_path,
    read_changelog,
    read_tails,
)
from .loop_lag import LoopLagMonitor
from .memory import release_free_memory
from .metrics import (
    FaustStatsCollector,
    KpiExporter,
    PipelineMetrics,
    WorkerCollector,
    build_pipeline_metrics,
)
from .pipeline import BatchResult, Message, Pipeline
from .prewarm import Prewarm
from .table import PartitionedStateTable
from .transport import KpiApp, TablesAtOnce, app_class

log = logging.getLogger("kpi_monitor")
STATE_TABLE = "kpi-state"
WRITE_CHUNK_BYTES = 256 * 1024
PRODUCER_BATCH_BYTES = 512 * 1024  # under the broker's default max.message.bytes (1 MB)
CATCH_UP_POLL_SECONDS = 0.05
PREWARM_WAIT_SECONDS = 60.0  # beyond its own 20 s for the changelog's tail
PREWARM_LEFTOVER_SECONDS = 60.0  # built states not handed over yet are kept this long
# A dead letter keeps at most this much of what was rejected (the producer refuses a record over
# ~1 MB, and a refused message may be far larger); the source offset in its headers finds the
# rest while the source topic retains it.
DEAD_LETTER_MAX_BYTES = 512 * 1024


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
    decisions: DecisionLoop | None = None
    feed: DecisionFeed | None = None
    # Where a start's time went before Faust ran (``agents.cli``): wall ms and seconds.
    startup: dict[str, float] = field(default_factory=dict)
    # Messages behind per assigned (topic, partition), from the consumer's high watermarks.
    lag: Callable[[], dict[tuple[str, int], int]] = dict
    # The last owned partitions' states, built while the worker joins (started by the CLI).
    prewarm: Prewarm | None = None

    async def metrics_parts(self) -> list[bytes]:
        """The /metrics page in pieces, in order."""
        return [*await self.exporter.parts_async(), generate_latest(self.registry)]


# Applied when the worker creates the changelog (Faust already makes it compacted). Kafka never
# compacts the active segment (by default it rolls at 1 GB or 7 days), so a busy changelog would
# be read nearly whole by a cold restore for days: roll it hourly, and clean once a tenth of the
# log is superseded records.
CHANGELOG_TOPIC_CONFIG = {
    "segment.ms": str(3_600_000),
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": str(86_400_000),
}


def data_dir(settings: Settings) -> str:
    return settings.data_dir or f"/tmp/kpi-monitor-{settings.app_id}-{settings.web_port}"


def data_dir_problem(path: str) -> str | None:
    """Why the worker cannot keep files in ``path`` (a file where the directory should be, a
    read-only or full disk), or None: a probe file is created and removed."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def changelog_topic(settings: Settings) -> str:
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


def faust_app(settings: Settings) -> KpiApp:
    """The Faust app with kpi-monitor's settings (no agents, tables or pages yet)."""
    return app_class(int(settings.fetch_max_wait_seconds * 1000))(
        settings.app_id,
        broker=settings.broker,
        store="memory://",
        datadir=data_dir(settings),
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
        # Faust compares the changelog offsets it has read in this process with the broker's end
        # offset and crashes the worker if it has read past it. The check protects RocksDB files
        # from a recreated topic; the memory store has none, and the embedded broker reports end
        # offsets short of the truth (shared notes), so a worker that kept a partition through a
        # rebalance crashed there. Restores stay exact: the state seeks to its own checkpoints.
        recovery_consistency_check=False,
        consumer_max_fetch_size=8 * 1024 * 1024,
        # A fold's changelog records in few producer batches: a partition's next batch is sent
        # only once the one before it is acknowledged (agents.table), a round trip each.
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # A batch is one fetch: bounded, or a catch-up would hand megabytes of events to one
        # fold and hold the event loop (heartbeats, scrapes) for seconds.
        broker_max_poll_records=settings.batch_size,
        broker_credentials=faust_credentials(settings),
        consumer_group_instance_id=settings.instance_id or None,
        TableManager=TablesAtOnce,
    )


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
    unusable = data_dir_problem(data_dir(settings))
    if unusable is not None:
        # Faust needs a directory of its own too: a private one, and no local file this run.
        fallback = tempfile.mkdtemp(prefix=f"kpi-monitor-{settings.app_id}-")
        log.error(
            "KPI_DATA_DIR %s cannot be used (%s): the worker runs without its local file, from "
            "the changelog (Faust's files in %s)",
            data_dir(settings),
            unusable,
            fallback,
        )
        settings = settings.replace(data_dir=fallback)
    app = faust_app(settings)
    pipeline = Pipeline(settings, clock)
    app.resume_positions = pipeline.resume_positions
    metrics = build_pipeline_metrics(registry)
    for topic in (*settings.topics.inputs(), settings.topics.plans):
        metrics.records_failed.labels(topic)  # every series from the start, at 0
    table = PartitionedStateTable(
        app,
        name=STATE_TABLE,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        local_store=settings.local_store,
        extra_topic_configs=CHANGELOG_TOPIC_CONFIG,
    )
    table.local_store_unavailable = unusable
    app.tables.add(table)
    _guard_the_changelog(app, settings, table, metrics)
    # One fold, expiry, rebalance or decision round at a time: a fold yields to the event loop
    # mid-batch, and none of the others may see or move a state half folded.
    state_lock = asyncio.Lock()
    prewarm = (
        Prewarm(
            local_path(data_dir(settings), STATE_TABLE),
            state_identity(settings),
            pipeline.build,
            settings,
        )
        if settings.local_store
        else None
    )
    _own_partitions_of_the_state(app, settings, pipeline, table, state_lock, prewarm)
    _ingest(app, settings, pipeline, table, metrics, state_lock)

    def lag() -> dict[tuple[str, int], int]:
        if not app.in_worker:  # e.g. under test_context: there is no consumer to ask
            return {}
        return consumer_lag(
            pipeline.resume_positions(), app.consumer.assignment(), app.consumer.highwater
        )

    exporter = KpiExporter(
        lambda: list(pipeline.states.values()), settings, clock, baselines_read(settings)
    )
    registry.register(
        WorkerCollector(lambda: len(pipeline.states), lag, pipeline.campaigns_in_several_partitions)
    )
    registry.register(FaustStatsCollector(lambda: app.monitor if app.in_worker else None))
    monitor = Monitor(app, pipeline, table, registry, exporter, metrics, lag=lag, prewarm=prewarm)
    if settings.decisions:
        monitor.decisions = DecisionLoop(
            app, settings, pipeline, table, exporter, lag, clock, registry, state_lock
        )
        monitor.feed = DecisionFeed(settings)
        install_decisions(app, monitor.decisions, monitor.feed)
    if settings.web_token:
        web = cast(AiohttpWeb, app.web)  # the aiohttp driver: Faust's only web driver here
        web.web_app.middlewares.append(bearer_token_required(settings.web_token))
    _pages(monitor)
    live_page.install(monitor, lag)
    return monitor


def _guard_the_changelog(
    app: KpiApp, settings: Settings, table: PartitionedStateTable, metrics: PipelineMetrics
) -> None:
    """The state's changelog is the truth and the local file its cache: a refused changelog
    batch stops the worker before any input offset is committed past it; a local file that
    fails is counted and read around (the changelog read whole), never a stopped worker."""

    async def refused(exc: BaseException) -> None:
        await app.crash(exc)

    table.on_refused = refused
    app.changelog_acknowledged = table.acknowledged

    async def cold_reader(topic: str, partitions: set[int]) -> list[tuple[bytes, bytes]]:
        return await read_changelog(settings, topic, partitions)

    table.cold_reader = cold_reader

    async def tail_reader(topic: str, at: dict[int, int]) -> dict[int, list]:
        return await read_tails(settings, topic, at)

    table.tail_reader = tail_reader
    for reason in FALLBACK_REASONS:
        metrics.local_store_fallbacks.labels(reason)  # every series from the start, at 0
    store = table.data  # built now: a file that fails to open is counted from the start
    if isinstance(store, LocalStore):
        for reason, count in store.fallbacks.items():
            metrics.local_store_fallbacks.labels(reason).inc(count)
        store.on_fallback = lambda reason: metrics.local_store_fallbacks.labels(reason).inc()


def _own_partitions_of_the_state(
    app: KpiApp,
    settings: Settings,
    pipeline: Pipeline,
    table: PartitionedStateTable,
    state_lock: asyncio.Lock,
    prewarm: Prewarm | None = None,
) -> None:
    """Hand the pipeline its partitions once Faust has restored the table, and park them on a
    revoke (the next assignment says whether they stay)."""
    input_topics = {*settings.topics.inputs(), settings.topics.plans}

    async def on_recovered(tbl: PartitionedStateTable) -> None:
        try:
            await hand_over(tbl)
        except Exception as exc:
            # Faust runs this in a task whose error nobody reads: the worker would go on without
            # the partitions' state, counting their events as not owned and committing them.
            log.exception("hand-over failed: stopping the worker")
            await app.crash(exc)
            raise

    async def hand_over(tbl: PartitionedStateTable) -> None:
        partitions = {tp.partition for tp in app.consumer.assignment() if tp.topic in input_topics}
        new = {tp.partition for tp in tbl.newly_assigned if tp.topic in input_topics}
        kept = partitions - new
        async with state_lock:
            began = time.perf_counter()
            # Only what is rebuilt: a partition kept through the rebalance keeps its live state.
            rebuild = pipeline.to_rebuild(partitions, kept)
            ready = await prewarmed(tbl, rebuild)
            records = await tbl.take_records(rebuild - set(ready))
            read = time.perf_counter()
            pipeline.assign(partitions, records, kept=kept, built=ready)
            built = time.perf_counter()
            if isinstance(tbl.data, LocalStore):
                tbl.data.note_owned(partitions)
            if settings.gc_freeze:
                # Before the worker serves: one full collection now, instead of the collector
                # walking the restored state again in later full collections.
                frozen = freeze_long_lived()
                log.info("froze %d long-lived objects out of the cyclic collector", frozen)
            tbl.handover_parts = {
                "prewarmed_partitions": len(ready),
                "read_seconds": round(read - began, 3),
                "build_seconds": round(built - read, 3),
                "freeze_seconds": round(time.perf_counter() - built, 3),
            }
            if ready and prewarm is not None:  # for mypy: ready comes from the prewarm
                # Their records were read while joining: counted as restored too.
                tbl.restored["records"] = len(records) + prewarm.taken_records
                tbl.handover_parts["prewarm_seconds"] = prewarm.seconds or 0.0
                tbl.handover_parts["prewarm_tail_records"] = prewarm.tail_records
        log.info(
            "owning partitions %s; resuming at %s", sorted(partitions), pipeline.resume_positions()
        )

    async def prewarmed(tbl: PartitionedStateTable, rebuild: set[int]) -> dict[int, PartitionState]:
        """The states built while joining for partitions the file has not moved on since."""
        store = tbl.data
        if prewarm is None or not prewarm.usable or not isinstance(store, LocalStore):
            return {}
        # Begun before the group, so usually done; waiting for it is no slower than building
        # now, unless it is stuck (a broker that does not answer its reads): then without it.
        if not await asyncio.to_thread(prewarm.wait, PREWARM_WAIT_SECONDS):
            log.warning("prewarm not done after %ss: rebuilding without it", PREWARM_WAIT_SECONDS)
            prewarm.abandon()
            return {}
        loop = asyncio.get_running_loop()  # on the writer thread: after every queued write
        topic = tbl.changelog_topic.get_topic_name()
        offsets = await loop.run_in_executor(store.writer, store.offsets, topic, rebuild)
        ready = prewarm.take(rebuild, offsets)
        if prewarm.built():  # a partial first assignment: the rest, for a while only
            loop.call_later(PREWARM_LEFTOVER_SECONDS, prewarm.drop_leftovers)
        return ready

    table.on_recovered = on_recovered

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0] if args else kwargs["revoked"]  # Faust sends it positionally
        # A fold in progress finishes its batch (records written) before its partitions go:
        # cut short, a kept partition would hold counts ahead of its checkpoint.
        async with state_lock:
            pipeline.revoke({tp.partition for tp in revoked if tp.topic in input_topics})


class FetchedBatches:
    """The batch ingest path: each fetch of the input topics, folded as one batch."""

    def __init__(
        self, topics: frozenset[str], fold: Callable[[Iterable[Message]], Awaitable[None]]
    ) -> None:
        self.topics = topics
        self._fold = fold

    async def __call__(self, batch: list[tuple[TP, list]]) -> None:
        await self._fold(
            Message(
                tp.topic, tp.partition, record.offset, record.value, record.timestamp, record.key
            )
            for tp, records in batch
            for record in records
        )


def _ingest(
    app: KpiApp,
    settings: Settings,
    pipeline: Pipeline,
    table: PartitionedStateTable,
    metrics: PipelineMetrics,
    state_lock: asyncio.Lock,
) -> None:
    """Fold the input topics (whole fetches, or Faust's agent with ``KPI_INGEST=faust``), and
    expire old state on a timer."""
    sources = (*settings.topics.inputs(), settings.topics.plans)
    source = app.topic(
        *sources,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    rejected_topic = app.topic(
        settings.topics.rejected,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    async def fold(messages: Iterable[Message]) -> None:
        started = time.perf_counter()
        async with state_lock:
            steps = pipeline.process_steps(messages)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    result: BatchResult = done.value
                    break
                await asyncio.sleep(0)  # heartbeats, scrapes and /health run here
            await table.write(result.records)
        for letter in result.dead_letters:
            rejected_topic.send_soon(
                key=dead_letter_key(letter),
                value=letter.rejection.original[:DEAD_LETTER_MAX_BYTES],
                headers=_dead_letter_headers(letter),
            )
        metrics.batches.inc()
        metrics.messages_replayed.inc(result.replayed)
        metrics.messages_unowned.inc(result.unowned)
        metrics.dead_letters.inc(len(result.dead_letters))
        for letter in result.dead_letters:
            if letter.rejection.reason == INTERNAL_ERROR:
                metrics.records_failed.labels(letter.topic).inc()
        metrics.batch_seconds.observe(time.perf_counter() - started)

    if settings.ingest == "batch":
        app.batch_handler = FetchedBatches(frozenset(sources), fold)

    # Subscribes the input topics; with batch ingest the consumer hands them to ``fold`` itself.
    @app.agent(source, name="ingest")
    async def ingest(stream: StreamT) -> None:
        events = cast(faust.Stream, stream)  # what Faust passes; take_events is not on StreamT
        async for batch in events.take_events(
            settings.batch_size, within=settings.batch_within_seconds
        ):
            await fold(
                Message(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.value,
                    int(e.message.timestamp * 1000) if e.message.timestamp else None,
                    e.message.key,
                )
                for e in batch
            )

    @app.timer(interval=10.0)
    async def expire_old_state() -> None:
        async with state_lock:
            await table.write(pipeline.expire())
        # On a thread: ctypes lets the GIL go during the call, and a trim of a large heap held
        # the event loop (seen in a stalled loop's stack).
        await asyncio.to_thread(release_free_memory)


def _pages(monitor: Monitor) -> None:
    """/metrics and /health (``/``, ``/kpis``: ``agents.page``), and the tasks behind them (the loop-lag ticker, the row
    refresh after bucket boundaries)."""
    app, pipeline, exporter, metrics = (
        monitor.app,
        monitor.pipeline,
        monitor.exporter,
        monitor.metrics,
    )
    loop_lag = LoopLagMonitor(metrics.loop_lag_seconds.observe)
    gc_pauses = GcPauseMonitor(
        lambda generation, seconds: metrics.gc_pause_seconds.labels(str(generation)).observe(
            seconds
        )
    )
    last_render = {"seconds": 0.0}

    @app.task
    async def watch_event_loop() -> None:
        gc_pauses.install()
        try:
            await loop_lag.run()
        finally:
            gc_pauses.uninstall()

    @app.task
    async def clock_the_catch_up() -> None:
        """After each hand-over, when every owned partition was first caught up (lag 0): the
        restart's or takeover's end, in /health, measured here rather than by scraping."""
        inputs = monitor.pipeline.settings.topics.inputs()
        while True:
            await monitor.table.served.wait()
            monitor.table.served.clear()
            handover = monitor.table.handover
            while monitor.table.handover is handover and not monitor.table.served.is_set():
                if caught_up(monitor.lag(), inputs, pipeline.states):
                    now = time.time()
                    handover["caught_up_at_ms"] = round(now * 1000)
                    assigned = handover["assigned_at_ms"]
                    if assigned is not None:
                        handover["caught_up_seconds"] = round(now - assigned / 1000, 3)
                    break
                await asyncio.sleep(CATCH_UP_POLL_SECONDS)

    @app.timer(interval=1.0)
    async def observe_collections() -> None:
        gc_pauses.drain()

    @app.task
    async def collect_young_objects() -> None:
        await collect_young_every(YOUNG_COLLECTION_SECONDS)

    @app.task
    async def refresh_rows_after_boundaries() -> None:
        await exporter.refresh_after_boundaries()

    @app.page("/metrics")
    async def metrics_page(
        web_view: faust.web.View, request: faust.web.Request
    ) -> faust.web.Response:
        started = time.perf_counter()
        parts = await monitor.metrics_parts()
        last_render["seconds"] = time.perf_counter() - started
        metrics.scrape_seconds.observe(last_render["seconds"])
        # Written in pieces, never joined: one write of a whole page (12 MB at 5,000 campaigns)
        # held the event loop ~70 ms while the socket took it.
        response = StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        response.content_length = sum(len(part) for part in parts)
        # A raw aiohttp response: Faust's page types know only its own Request/Response.
        await response.prepare(request)  # type: ignore[arg-type]
        for part in parts:
            view = memoryview(part)
            for start in range(0, len(part), WRITE_CHUNK_BYTES):
                await response.write(view[start : start + WRITE_CHUNK_BYTES])
        await response.write_eof()
        return response  # type: ignore[return-value]

    @app.page("/health")
    async def health_page(
        web_view: faust.web.View, request: faust.web.Request
    ) -> faust.web.Response:
        """Cheap readiness/progress probe: owned partitions, events folded by this process, the
        longest event-loop stall since the previous probe, and the last /metrics render time."""
        body = {
            "partitions": sorted(pipeline.states),
            "events_folded": pipeline.events_folded,
            "campaigns": sum(s.admitted_campaigns for s in pipeline.states.values()),
            "campaigns_in_several_partitions": pipeline.campaigns_in_several_partitions(),
            "loop_lag_worst_seconds": loop_lag.take_worst(),
            "loop_lag_worst_cpu_seconds": loop_lag.take_worst_cpu(),
            "loop_lag_worst_stack": loop_lag.take_worst_stack(),
            # Every 10 ms of that stall once 30 ms late: the pieces of work it was made of.
            "loop_lag_worst_samples": loop_lag.take_worst_samples(),
            # The longest cyclic garbage collection since the previous probe: a stall's share.
            "gc_pause_worst": dict(
                zip(("seconds", "generation", "cpu_seconds", "collected"), gc_pauses.take_worst())
            ),
            "last_metrics_render_seconds": last_render["seconds"],
            # The last restore: live records, and how many of them the changelog gave (the rest
            # came from the local store's file).
            "restored": monitor.table.restored,
            # The last rebalance's hand-over: assigned, then serving the restored state.
            "handover": monitor.table.handover,
            # The local file: in use, or what made the worker read the changelog instead.
            "local_store": local_store_health(monitor.table),
            "lag": {f"{topic}/{partition}": n for (topic, partition), n in monitor.lag().items()},
            "startup": monitor.startup,
            "decision_round": monitor.decisions.last_round if monitor.decisions else None,
        }
        return web_view.bytes(orjson.dumps(body), content_type="application/json")


def local_store_health(table: PartitionedStateTable) -> dict | None:
    store = table.data
    if not isinstance(store, LocalStore):
        return None
    return {
        "path": str(store.path),
        "in_use": not store.disabled,
        "fallbacks": dict(store.fallbacks),
        "partitions_not_in_file": sorted(store.failed),
    }


def state_identity(settings: Settings) -> Identity:
    """What the local file caches (``agents.local_store.Identity``)."""
    return Identity(changelog_topic(settings), settings.app_id, settings.partitions)


def dead_letter_key(letter) -> bytes:
    """Where the rejected bytes came from: a replay after a crash sends the same key again, so a
    compacted dead-letter topic keeps one copy."""
    index = "" if letter.rejection.element is None else letter.rejection.element
    return f"{letter.topic}/{letter.partition}/{letter.offset}/{index}".encode()


def _dead_letter_headers(letter) -> list[tuple[str, bytes]]:
    rejection = letter.rejection
    headers = [
        ("kpi.reason", rejection.reason.encode()),
        ("kpi.detail", rejection.detail.encode()),
        ("kpi.source.topic", letter.topic.encode()),
        ("kpi.source.partition", str(letter.partition).encode()),
        ("kpi.source.offset", str(letter.offset).encode()),
    ]
    if rejection.element is not None:
        headers.append(("kpi.source.index", str(rejection.element).encode()))
    if len(rejection.original) > DEAD_LETTER_MAX_BYTES:
        headers.append(("kpi.original.bytes", str(len(rejection.original)).encode()))
    return headers
