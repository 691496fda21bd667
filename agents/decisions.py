"""The auto-pause decision tick in the worker (``autopause``): every ``KPI_DECISION_INTERVAL``,
judge the owned partitions' campaigns, persist their state with the decisions in its outbox
(acknowledged), send the decisions to the decisions topic keyed by campaign into the campaign's
own partition, then persist the emptied outboxes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import faust
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from autopause.runner import STATES, Runner, load_rules
from stream import catalogue as m
from stream.settings import Settings

from .metrics import KpiExporter
from .pipeline import Pipeline
from .table import PartitionedStateTable

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
        breaker_open=Gauge(m.BREAKER_OPEN.name, m.BREAKER_OPEN.doc, m.BREAKER_OPEN.labels,
                           registry=registry),
        campaigns=Gauge(m.AUTOPAUSE_CAMPAIGNS.name, m.AUTOPAUSE_CAMPAIGNS.doc,
                        m.AUTOPAUSE_CAMPAIGNS.labels, registry=registry),
        unsent=Gauge(m.DECISIONS_UNSENT.name, m.DECISIONS_UNSENT.doc, registry=registry),
    )


class DecisionLoop:
    def __init__(self, app: faust.App, settings: Settings, pipeline: Pipeline,
                 table: PartitionedStateTable, exporter: KpiExporter,
                 lag: Callable[[], dict[tuple[str, int], int]], clock: Callable[[], int],
                 registry: CollectorRegistry) -> None:
        self.settings = settings
        self.runner = Runner(load_rules(settings), settings)
        self.pipeline, self.table, self.exporter = pipeline, table, exporter
        self.lag, self.clock = lag, clock
        self.metrics = build_decision_metrics(registry)
        self.topic = app.topic(settings.topics.decisions, key_type=bytes, value_type=bytes,
                               key_serializer="raw", value_serializer="raw",
                               partitions=settings.partitions)
        for rule in self.runner.rules:  # every series exists from the start, at 0
            self.metrics.breaker_open.labels(rule.name).set(0)
            for state in STATES:
                self.metrics.campaigns.labels(rule.name, state).set(0)

    async def tick(self) -> list[dict]:
        """One round; the decisions sent (restored unsent ones first)."""
        states = list(self.pipeline.states.values())
        if not states or not self.runner.rules:
            return []
        now = self.clock()
        unsent = self.runner.unsent(states, now)
        snap = await self.exporter.snapshot_async()
        states = list(self.pipeline.states.values())  # the snapshot yielded: ownership may move
        result = self.runner.tick(now, states, snap.rows, self.lag(),
                                  mode=self.settings.decision_mode)
        await self.table.write(result.records, acked=True)
        for rule, is_open in result.breaker.items():
            self.metrics.breaker_open.labels(rule).set(int(is_open))
        for (rule, state), count in result.counts.items():
            self.metrics.campaigns.labels(rule, state).set(count)
        pending = unsent + result.to_send
        self.metrics.unsent.set(len(pending))
        sent = []
        for partition, decision in pending:
            if partition not in self.pipeline.states:
                continue  # revoked meanwhile: the new owner sends it from the outbox
            delivery = await self.topic.send(key=decision["campaign_id"].encode(),
                                             value=orjson.dumps(decision), partition=partition)
            await delivery
            sent.append(decision)
        for decision in result.to_send:
            self.metrics.decisions.labels(decision[1]["rule"], decision[1]["verdict"]).inc()
            log.info("decision %s: campaign %s rule %s -> %s", decision[1]["decision_id"],
                     decision[1]["campaign_id"], decision[1]["rule"], decision[1]["verdict"])
        await self.table.write(self.runner.sent(list(self.pipeline.states.values()), sent))
        self.metrics.unsent.set(len(pending) - len(sent))
        return sent


def install(app: faust.App, loop: DecisionLoop) -> None:
    @app.timer(interval=loop.settings.decision_interval_seconds)
    async def decide() -> None:
        try:
            await loop.tick()
        except Exception:  # a failed tick leaves the outbox to the next one
            log.exception("auto-pause decision tick failed")
