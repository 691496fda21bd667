"""Re-judge past events under a rules file: the workers' own fold and decision engine, in process.

No Kafka and no Faust here (``agents.backtest_cli`` reads the topics): messages in, in the order
of their Kafka timestamps, which are the replay's clock, as the wall clock is a live worker's.
Each message is folded by the same ``Pipeline`` a worker uses (decoded and validated "now" =
its timestamp), and every ``tick_ms`` of that clock the same ``Runner`` judges the rows the
worker's exporter builds, as one worker owning every partition, caught up (no lag) and with
every decision acknowledged at once. Nothing is written anywhere.

Several rule sets (``--compare``) share one fold: each has its own runner and its own
auto-pause tracks, swapped into the partition states around its rounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from autopause.runner import Runner, baselines_read
from rulebook.rules import Rule
from stream.baselines import BaselineRef
from stream.settings import Settings
from stream.snapshot import RowCache, build_rows

from .pipeline import Message, Pipeline

MODE = "backtest"


@dataclass
class Verdicts:
    """What one rule set decided, in issue order."""

    decisions: list[dict] = field(default_factory=list)
    rounds: int = 0


class Backtest:
    def __init__(
        self,
        settings: Settings,
        rule_sets: dict[str, list[Rule]],
        partitions: Iterable[int],
        *,
        tick_ms: int,
        judge_from_ms: int = 0,
        expire_every_ms: int = 3_600_000,
    ) -> None:
        self.settings = settings
        self.now_ms = 0
        self.pipeline = Pipeline(settings, lambda: self.now_ms, persist=False)
        self.pipeline.assign(partitions, [])
        self.runners = {name: Runner(rules, settings) for name, rules in rule_sets.items()}
        every_rule = [r for rules in rule_sets.values() for r in rules]
        self.baselines: tuple[BaselineRef, ...] = baselines_read(settings, every_rule)
        self.tracks: dict[str, dict[int, dict]] = {
            name: {p: {} for p in self.pipeline.states} for name in rule_sets
        }
        self.verdicts = {name: Verdicts() for name in rule_sets}
        self.tick_ms = tick_ms
        self.judge_from_ms = judge_from_ms
        self.expire_every_ms = expire_every_ms
        self.next_tick: int | None = None
        self.next_expiry: int | None = None
        self.windows_ms = tuple(sorted(w * 1000 for w in settings.windows_seconds))
        self.lag = {
            (topic, p): 0 for topic in settings.topics.inputs() for p in self.pipeline.states
        }
        self.events = 0
        self.dead_letters = 0
        self._batch: list[Message] = []
        # As the worker's exporter keeps them: a row is rebuilt only where its sums moved.
        self.rows = RowCache()

    # -- the clock --------------------------------------------------------------------------

    def feed(self, messages: Iterable[Message]) -> None:
        """Fold ``messages`` (in timestamp order), judging at each tick their clock passes."""
        plans_topic = self.pipeline.plans_topic
        for message in messages:
            at = message.timestamp or 0
            if message.topic == plans_topic and self.next_tick is None:
                self._batch.append(message)  # plans before the stream: no clock from them
                continue
            if self.next_tick is None:
                start = max(at, self.judge_from_ms)
                self.next_tick = start - start % self.tick_ms + self.tick_ms
                self.next_expiry = at + self.expire_every_ms
            if at >= self.next_tick:
                self._fold()
                while at >= self.next_tick:
                    self._round(self.next_tick)
                    self.next_tick += self.tick_ms
            if self.next_expiry is not None and at >= self.next_expiry:
                self._fold()
                self.now_ms = at
                self.pipeline.expire()
                self.next_expiry = at + self.expire_every_ms
            self._batch.append(message)
            self.now_ms = max(self.now_ms, at)
        self._fold()

    def finish(self, until_ms: int | None = None) -> None:
        """Judge the ticks up to ``until_ms`` (default: the last message's clock)."""
        self._fold()
        end = self.now_ms if until_ms is None else until_ms
        while self.next_tick is not None and self.next_tick <= end:
            self._round(self.next_tick)
            self.next_tick += self.tick_ms

    def _fold(self) -> None:
        if not self._batch:
            return
        result = self.pipeline.process(self._batch)
        self.events += result.events
        self.dead_letters += len(result.dead_letters)
        self._batch = []

    # -- the rounds -------------------------------------------------------------------------

    def _round(self, now_ms: int) -> None:
        self.now_ms = max(self.now_ms, now_ms)
        states = list(self.pipeline.states.values())
        rows = list(
            build_rows(
                states,
                now_ms,
                self.settings.bucket_seconds * 1000,
                self.windows_ms,
                self.rows,
                zone=self.settings.timezone,
                baselines=self.baselines,
            )
        )
        for name, runner in self.runners.items():
            tracks = self.tracks[name]
            for state in states:
                state.autopause = tracks[state.partition]
            result = runner.tick(now_ms, states, rows, self.lag, mode=MODE)
            runner.sent(states, [d for _, d in result.to_send])
            verdicts = self.verdicts[name]
            verdicts.rounds += 1
            if now_ms >= self.judge_from_ms:
                verdicts.decisions += [d for _, d in result.to_send]
