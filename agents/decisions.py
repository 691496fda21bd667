"""The auto-pause decision tick in the worker (``autopause``): every ``KPI_DECISION_INTERVAL``,
judge the owned partitions' campaigns, persist their state with the decisions in its outbox
(acknowledged), send the decisions to the decisions topic keyed by campaign into the campaign's
own partition, then persist the emptied outboxes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from autopause.runner import STATES, Runner, TickResult, load_rules
from autopause.view import Changes, DecisionView, parse_cursor
from stream import catalogue as m
from stream.events import MAX_ID_LENGTH
from stream.ids import unprintable
from stream.settings import Settings

from .kafka_auth import aiokafka_kwargs
from .lag import caught_up
from .metrics import RENDER_SLICE_SECONDS, KpiExporter
from .pipeline import Pipeline
from .table import PartitionedStateTable
from .topics import bootstrap_servers

# After a hand-over, the first round waits for the taken partitions to catch up, at most this long
# (a round on a partition still behind judges it ``unknown``: lagging).
TAKEOVER_ROUND_WAIT_SECONDS = 4.0

log = logging.getLogger("kpi_monitor")


@dataclass
class DecisionMetrics:
    decisions: Counter
    breaker_open: Gauge
    campaigns: Gauge
    unsent: Gauge


def build_decision_metrics(registry: CollectorRegistry) -> DecisionMetrics:
    return DecisionMetrics(
        decisions=Counter(m.DECISIONS.name, m.DECISIONS.doc, m.DECISIONS.labels, registry=registry),
        breaker_open=Gauge(
            m.BREAKER_OPEN.name, m.BREAKER_OPEN.doc, m.BREAKER_OPEN.labels, registry=registry
        ),
        campaigns=Gauge(
            m.AUTOPAUSE_CAMPAIGNS.name,
            m.AUTOPAUSE_CAMPAIGNS.doc,
            m.AUTOPAUSE_CAMPAIGNS.labels,
            registry=registry,
        ),
        unsent=Gauge(m.DECISIONS_UNSENT.name, m.DECISIONS_UNSENT.doc, registry=registry),
    )


class DecisionLoop:
    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        pipeline: Pipeline,
        table: PartitionedStateTable,
        exporter: KpiExporter,
        lag: Callable[[], dict[tuple[str, int], int]],
        clock: Callable[[], int],
        registry: CollectorRegistry,
        state_lock: asyncio.Lock | None = None,
    ) -> None:
        self.settings = settings
        # Held from the snapshot through the round: no fold moves a state it is judging.
        self.state_lock = state_lock or asyncio.Lock()
        self.runner = Runner(load_rules(settings), settings)
        self.pipeline, self.table, self.exporter = pipeline, table, exporter
        self.lag, self.clock = lag, clock
        self.metrics = build_decision_metrics(registry)
        self.topic = app.topic(
            settings.topics.decisions,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
        )
        # The last round: when, over which partitions, and how many (rule, campaign) judgements
        # were ``unknown`` (not trusted: lagging, stalled, late); for /health.
        self.last_round: dict = {}
        self._round_lock = asyncio.Lock()
        for rule in self.runner.rules:  # every series exists from the start, at 0
            self.metrics.breaker_open.labels(rule.name).set(0)
            for state in STATES:
                self.metrics.campaigns.labels(rule.name, state).set(0)

    async def caught_up(self, at_most_seconds: float) -> bool:
        """Once every owned input partition's lag is known and 0 (True), or after
        ``at_most_seconds`` (False): the round then says which are still behind."""
        inputs = self.settings.topics.inputs()
        deadline = time.monotonic() + at_most_seconds
        while True:
            if caught_up(self.lag(), inputs, self.pipeline.states):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)

    async def _judge(self) -> tuple[TickResult, list[tuple[int, dict]]]:
        """The round's judgement, on states no fold, expiry or rebalance changes meanwhile (the
        caller holds the state lock): the runner's result, and the decisions restored unsent."""
        states = list(self.pipeline.states.values())
        now = self.clock()
        unsent = self.runner.unsent(states, now)
        snap = await self.exporter.snapshot_async()
        steps = self.runner.tick_steps(
            now,
            states,
            snap.rows,
            self.lag(),
            mode=self.settings.decision_mode,
            owned=lambda state: self.pipeline.states.get(state.partition) is state,
        )
        slice_end = time.perf_counter() + RENDER_SLICE_SECONDS
        while True:  # in slices, as the scrape: heartbeats and pages are served in between
            try:
                next(steps)
            except StopIteration as done:
                result = done.value
                break
            if time.perf_counter() > slice_end:
                await asyncio.sleep(0)
                slice_end = time.perf_counter() + RENDER_SLICE_SECONDS
        await self.table.write(result.records, acked=True)
        return result, unsent

    async def release(self, campaign: str, rule: str | None) -> list[dict]:
        """``Runner.release`` on the owned partitions, written before it answers."""
        async with self.state_lock:
            released, written = self.runner.release(
                list(self.pipeline.states.values()), campaign, rule, self.clock()
            )
            await self.table.write(written, acked=True)
        for each in released:
            log.info("operator released campaign %s rule %s", campaign, each["rule"])
        return released

    async def tick(self) -> list[dict]:
        """One round; the decisions sent (restored unsent ones first). One round at a time (the
        timer's and the one after a hand-over): a round sends what the one before it left in
        the outboxes, so two at once would send it twice."""
        async with self._round_lock:
            return await self._tick()

    async def _tick(self) -> list[dict]:
        states = list(self.pipeline.states.values())
        if not states or not self.runner.rules:
            return []
        async with self.state_lock:
            result, unsent = await self._judge()
        for rule, scopes in result.breaker.items():
            self.metrics.breaker_open.labels(rule).set(int(bool(scopes)))
        for (rule, state), count in result.counts.items():
            self.metrics.campaigns.labels(rule, state).set(count)
        self.last_round = {
            "at_ms": self.clock(),
            "partitions": sorted(self.pipeline.states),
            "unknown": sum(n for (_, state), n in result.counts.items() if state == "unknown"),
        }
        pending = unsent + result.to_send
        self.metrics.unsent.set(len(pending))
        sent = []
        for partition, decision in pending:
            if partition not in self.pipeline.states:
                continue  # revoked meanwhile: the new owner sends it from the outbox
            delivery = await self.topic.send(
                key=decision["campaign_id"].encode(),
                value=orjson.dumps(decision),
                partition=partition,
            )
            await delivery
            sent.append(decision)
        for _, issued in result.to_send:
            self.metrics.decisions.labels(issued["rule"], issued["verdict"]).inc()
            log.warning(
                "decision %s: campaign %s rule %s -> %s",
                issued["decision_id"],
                issued["campaign_id"],
                issued["rule"],
                issued["verdict"],
            )
        await self.table.write(self.runner.sent(list(self.pipeline.states.values()), sent))
        self.metrics.unsent.set(len(pending) - len(sent))
        return sent


def release_request(query: Mapping[str, str]) -> tuple[str, str | None] | str:
    """``campaign`` and the optional ``rule`` of a release, or why the query is refused."""
    unknown = sorted(set(query) - {"campaign", "rule"})
    if unknown:
        return f"unknown parameter {unknown[0][:40]!r}: campaign and rule only"
    names = [name for name, _ in query.items()]  # a multidict's items repeat a repeated name
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"{repeated[0]} is given more than once: which one was meant is not guessed"
    out: list[str | None] = []
    for name in ("campaign", "rule"):
        value = query.get(name)
        if value is None:
            out.append(None)
            continue
        if not 1 <= len(value) <= MAX_ID_LENGTH:
            return f"{name} must be 1-{MAX_ID_LENGTH} characters"
        problem = unprintable(value)
        if problem is not None:
            return f"{name} {problem}"
        out.append(value)
    if out[0] is None:
        return "campaign is required: POST /autopause/release?campaign=ID[&rule=NAME]"
    return out[0], out[1]


def install(app: faust.App, loop: DecisionLoop, feed: DecisionFeed) -> None:
    """The decision timer, the task reading the decisions topic back, and ``/decisions``."""

    @app.timer(interval=loop.settings.decision_interval_seconds)
    async def decide() -> None:
        try:
            await loop.tick()
        except Exception:  # a failed tick leaves the outbox to the next one
            log.exception("auto-pause decision tick failed")

    @app.task
    async def judge_taken_partitions() -> None:
        """A round as soon as partitions taken over are caught up, not at the timer's next tick:
        their campaigns would otherwise have no judgement (or the dead owner's last) for up to
        a whole interval."""
        while True:
            await loop.table.took_partitions.wait()
            loop.table.took_partitions.clear()
            await loop.caught_up(TAKEOVER_ROUND_WAIT_SECONDS)
            try:
                await loop.tick()
            except Exception:
                log.exception("auto-pause decision round after a hand-over failed")

    @app.task
    async def follow_decisions() -> None:
        while True:
            try:
                await feed.follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the decisions topic failed; retrying in 5s")
                await asyncio.sleep(5)

    @app.page("/autopause/release")
    class ReleaseView(faust.web.View):
        """An operator takes a held campaign back (``POST``): its held rules (or ``rule``) run
        again. Answered once the released tracks are written; 404 when this worker holds no
        hold of the campaign (another worker may own its partition: ask each). Any other
        method: 405 (Faust's default)."""

        async def post(self, request: faust.web.Request, **kwargs: Any) -> faust.web.Response:
            asked = release_request(request.query)
            if isinstance(asked, str):
                return self.error(400, asked)
            campaign, rule = asked
            released = await loop.release(campaign, rule)
            if not released:
                return self.error(404, f"no held rule of {campaign!r} on this worker")
            body = {"campaign": campaign, "released": released}
            return self.bytes(orjson.dumps(body), content_type="application/json")

    @app.page("/decisions")
    async def decisions_page(
        web_view: faust.web.View, request: faust.web.Request
    ) -> faust.web.Response:
        """The cluster's current verdict per campaign and rule, and the cursor to follow changes."""
        body = {
            "cursor": feed.view.cursor,
            "mode": loop.settings.decision_mode,
            "campaigns": feed.view.current,
        }
        return web_view.bytes(orjson.dumps(body), content_type="application/json")

    @app.page("/decisions/changes")
    async def changes_page(
        web_view: faust.web.View, request: faust.web.Request
    ) -> faust.web.Response:
        """Decisions after ``cursor``; with ``wait`` (seconds, at most 60), a long poll."""
        query = request.query
        try:
            cursor = parse_cursor(query.get("cursor", ""))
            wait = min(60.0, max(0.0, float(query.get("wait", "0"))))
        except ValueError as exc:
            return web_view.error(400, str(exc))
        changes = await feed.changes(cursor, wait)
        body = {"decisions": changes.decisions, "cursor": changes.cursor, "reset": changes.reset}
        return web_view.bytes(orjson.dumps(body), content_type="application/json")


class DecisionFeed:
    """Every worker reads the whole decisions topic back (it is small: one record per decision),
    so any worker's ``/decisions`` shows the cluster's current verdicts and changes."""

    def __init__(self, settings: Settings, view: DecisionView | None = None) -> None:
        self.settings = settings
        self.view = view or DecisionView()
        self._changed = asyncio.Event()

    async def follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self.settings.broker or ""),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **aiokafka_kwargs(self.settings),
        )
        await consumer.start()
        try:
            topic = self.settings.topics.decisions
            consumer.assign([TopicPartition(topic, p) for p in range(self.settings.partitions)])
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batch.items():
                    for message in messages:
                        try:
                            self.view.add(tp.partition, message.offset, orjson.loads(message.value))
                        except (orjson.JSONDecodeError, KeyError, TypeError):
                            log.warning(
                                "skipping a malformed decision at %s:%s", tp, message.offset
                            )
                if batch:
                    self._changed.set()
                    self._changed = asyncio.Event()
        finally:
            await consumer.stop()

    async def changes(self, cursor: dict[int, int], wait_seconds: float) -> Changes:
        """Changes after ``cursor``; if there are none, wait up to ``wait_seconds`` for some."""
        changes = self.view.changes(cursor)
        if changes.decisions or changes.reset or wait_seconds <= 0:
            return changes
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), wait_seconds)
        return self.view.changes(cursor)
