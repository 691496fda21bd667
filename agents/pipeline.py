"""Glue between Kafka messages and the pure per-partition state: decode, apply, collect records.

Holds the states of the partitions this worker owns; knows nothing about Faust.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Mapping
from time import perf_counter
from typing import NamedTuple

from stream import changelog, expiry
from stream.codec import Record, decode_key, partition_of_key
from stream.events import (
    INTERNAL_ERROR,
    Event,
    Rejection,
    ValidationRules,
    parse_message,
    validate_elements,
)
from stream.settings import Settings
from stream.state import OTHER, PLANS, PartitionState, StateConfig
from stream.steps import run_to_end

log = logging.getLogger(__name__)

# A fold yields to the event loop after this much work; a slice of a message is checked against
# it, and a slice of 500 events costs ~5 ms here.
SLICE_SECONDS = 0.01
ELEMENTS_PER_SLICE = 500


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int | None = None  # Kafka record timestamp (ms): the dedup horizon's clock
    key: bytes | None = None  # read for the plans topic only (events are keyed for partitioning)


class DeadLetter(NamedTuple):
    topic: str
    partition: int
    offset: int
    rejection: Rejection


class BatchResult(NamedTuple):
    records: list[Record]
    dead_letters: list[DeadLetter]
    events: int  # valid events folded (duplicates included)
    replayed: int  # messages skipped because the state already holds them
    unowned: int  # messages of partitions not (or no longer) assigned here
    failed: int = 0  # records whose fold raised: dead-lettered as internal_error (``_failed``)


def validation_rules(settings: Settings) -> ValidationRules:
    return ValidationRules(
        currency=settings.currency,
        future_tolerance_ms=settings.future_tolerance_seconds * 1000,
        max_cost=settings.max_cost,
        max_sale_value=settings.max_sale_value,
        max_events_per_message=settings.max_events_per_message,
        max_message_bytes=settings.max_message_bytes,
    )


def state_config(settings: Settings) -> StateConfig:
    return StateConfig(
        bucket_ms=settings.bucket_seconds * 1000,
        retention_ms=settings.retention_seconds * 1000,
        dedup_horizon_ms=settings.dedup_horizon_seconds * 1000,
        dedup_max_ids=settings.dedup_max_ids_per_partition,
        lead_ttl_ms=settings.lead_ttl_seconds * 1000,
        max_campaigns=settings.max_campaigns_per_partition,
        max_channels=settings.max_channels_per_partition,
        long_bucket_ms=settings.long_bucket_seconds * 1000,
        long_retention_ms=settings.long_retention_seconds * 1000,
    )


class Pipeline:
    def __init__(
        self, settings: Settings, clock: Callable[[], int], *, persist: bool = True
    ) -> None:
        self.settings = settings
        # False: no changelog records are encoded (the backtest writes nothing); the state
        # after each batch is the same (``changelog.discard_batch``).
        self.persist = persist
        self.clock = clock
        self.inputs = settings.topics.inputs()
        self.plans_topic = settings.topics.plans
        # Where each topic's offset is kept in Meta.checkpoint: the input topics, then plans.
        self.sources = (*self.inputs, self.plans_topic)
        self.kind_of_topic = {topic: kind for kind, topic in enumerate(self.inputs)}
        self.rules = validation_rules(settings)
        self.config = state_config(settings)
        self.states: dict[int, PartitionState] = {}
        self.parked: dict[int, PartitionState] = {}  # revoked, maybe assigned again
        self.events_folded = 0  # valid events decoded by this process (replays excluded)
        self._failures_logged: set[tuple[str, str]] = set()  # (topic, exception type)

    def assign(
        self,
        partitions: Iterable[int],
        records: Iterable[tuple[bytes, bytes | None]],
        kept: Iterable[int] = (),
        built: Mapping[int, PartitionState] | None = None,
    ) -> None:
        """Own exactly ``partitions``. Those in ``kept`` (owned before and since, so nobody else
        wrote them) keep their live state; those in ``built`` take that state (built from the
        same records earlier: ``agents.prewarm``); the others are rebuilt from ``records``."""
        wanted = set(partitions)
        keep = wanted - self.to_rebuild(wanted, kept)
        ready = {p: state for p, state in (built or {}).items() if p in wanted - keep}
        fresh = self.build(wanted - keep - set(ready), records)
        states = {}
        for partition in sorted(wanted):
            if partition in keep:
                states[partition] = self.parked[partition]
            else:
                states[partition] = ready[partition] if partition in ready else fresh[partition]
        self.parked = {}
        self.states = states

    def build(
        self, partitions: Iterable[int], records: Iterable[tuple[bytes, bytes | None]]
    ) -> dict[int, PartitionState]:
        """The states of ``partitions`` rebuilt from restored records (of any partitions; a None
        value is a deletion). Touches nothing of the pipeline: safe on another thread."""
        wanted = set(partitions)
        by_partition: dict[int, list] = defaultdict(list)
        for key, value in records:
            partition = partition_of_key(key)
            if partition in wanted and value is not None:
                by_partition[partition].append((decode_key(key), value))
        states = {}
        for partition in sorted(wanted):
            state = PartitionState(partition, self.config)
            changelog.load(state, by_partition.get(partition, ()))
            states[partition] = state
        return states

    def to_rebuild(self, partitions: Iterable[int], kept: Iterable[int] = ()) -> set[int]:
        """Which of ``partitions`` ``assign`` rebuilds from records: all but those in ``kept``
        whose live state is parked here."""
        wanted = set(partitions)
        return wanted - (set(kept) & set(self.parked))

    def revoke(self, partitions: Iterable[int]) -> None:
        """Stop folding ``partitions``; their state is parked until the next assignment says
        whether they stay here."""
        for partition in partitions:
            state = self.states.pop(partition, None)
            if state is not None:
                self.parked[partition] = state

    def resume_positions(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> next offset to read, from the checkpoints held in state."""
        return {
            (self.sources[index], partition): offset
            for partition, state in self.states.items()
            for index, offset in state.resume_offsets().items()
        }

    def process(self, messages: Iterable[Message]) -> BatchResult:
        """Fold a batch of messages in one go (see ``process_steps``)."""
        return run_to_end(self.process_steps(messages))

    def process_steps(
        self, messages: Iterable[Message], slice_seconds: float = SLICE_SECONDS
    ) -> Generator[None, None, BatchResult]:
        """Fold a batch, yielding whenever ``slice_seconds`` of work have passed, between
        messages or between slices of one message, so that the caller can let the event loop
        run (heartbeats, scrapes, /health).

        The caller keeps the states as they are until the generator is done: no revoke, no
        assign, no expiry and no decision round in between (the app holds one lock across a
        fold, and those take it too). A message folded in part, or a partition's batch whose
        records are not yet written, is not a state anyone else may see or persist.
        """
        now = self.clock()
        states = self.states
        kind_of_topic = self.kind_of_topic
        rules = self.rules
        touched: dict[int, PartitionState] = {}
        dead: list[DeadLetter] = []
        events = replayed = unowned = failed = 0
        timer = perf_counter
        deadline = timer() + slice_seconds
        plans_topic = self.plans_topic
        for topic, partition, offset, value, timestamp, key in messages:
            state = states.get(partition)
            if state is None:
                unowned += 1
                continue
            try:
                if topic == plans_topic:
                    if offset <= state.meta.checkpoint[PLANS]:
                        replayed += 1
                        continue
                    touched[partition] = state
                    refused = state.apply_plan(offset, key, value)
                    if refused is not None:
                        dead.append(DeadLetter(topic, partition, offset, refused))
                    continue
                kind = kind_of_topic[topic]
                if not state.begin_message(kind, offset, now, timestamp):
                    replayed += 1
                    continue
                touched[partition] = state
                parsed = parse_message(value or b"", rules)
                if isinstance(parsed, Rejection):
                    rejections = [parsed]
                    state.count_rejections(rejections)
                    dead.append(DeadLetter(topic, partition, offset, parsed))
                    state.end_message(kind, offset)
                    continue
                folded = 0
                size = len(parsed.items)
                for start in range(0, size, ELEMENTS_PER_SLICE):
                    valid: list[Event] = []
                    rejections = []
                    stop = min(size, start + ELEMENTS_PER_SLICE)
                    validate_elements(parsed, start, stop, kind, now, rules, valid, rejections)
                    state.apply_events(kind, offset, folded, valid, now)
                    state.count_rejections(rejections)
                    folded += len(valid)
                    dead.extend(DeadLetter(topic, partition, offset, r) for r in rejections)
                    if stop < size and timer() > deadline:
                        yield
                        deadline = timer() + slice_seconds
                state.end_message(kind, offset)
                events += folded
            except Exception as exc:  # the last resort: see ``_failed``
                touched[partition] = state
                dead.append(self._failed(state, topic, partition, offset, value, exc))
                failed += 1
            if timer() > deadline:
                yield
                deadline = timer() + slice_seconds
        records: list[Record] = []
        for p in sorted(touched):
            # A partition's records take their own slice (~30 ms for 45,000 new ids).
            if timer() > deadline - slice_seconds / 2:
                yield
                deadline = timer() + slice_seconds
            if not self.persist:
                changelog.discard_batch(touched[p])
                continue
            steps = changelog.finish_batch_steps(touched[p])
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    records += done.value
                    break
                if timer() > deadline:
                    yield
                    deadline = timer() + slice_seconds
        self.events_folded += events
        return BatchResult(records, dead, events, replayed, unowned, failed)

    def _failed(
        self,
        state: PartitionState,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        exc: Exception,
    ) -> DeadLetter:
        """A record whose fold raised where validation did not expect it (a defect of ours, or
        an input no test thought of). No single record may stop a worker: stopping would stop
        monitoring and auto-pause for every campaign, and the restarted worker would read the
        same record and stop again. The record is dead-lettered (``internal_error``, with its
        exception), counted, and the partition's checkpoint moves past it as for a refused
        record. A plan is applied only after it validated, so a plan record that raises changes
        nothing; an event message that raises midway keeps the events folded before the raise
        (each is folded once: positions make a replay a no-op)."""
        index = PLANS if topic == self.plans_topic else self.kind_of_topic[topic]
        checkpoint = state.meta.checkpoint
        checkpoint[index] = max(checkpoint[index], offset)
        detail = f"{type(exc).__name__}: {exc}"[:500]
        rejection = Rejection(INTERNAL_ERROR, detail, None, value or b"")
        state.count_rejections([rejection])
        first = (topic, type(exc).__name__) not in self._failures_logged
        if first and len(self._failures_logged) < 100:
            self._failures_logged.add((topic, type(exc).__name__))
            log.error(
                "a record of %s[%d] at offset %d raised; dead-lettered as internal_error and "
                "skipped (later failures of this kind are counted, not logged)",
                topic,
                partition,
                offset,
                exc_info=exc,
            )
        return DeadLetter(topic, partition, offset, rejection)

    def campaigns_in_several_partitions(self) -> int:
        """Campaigns held by more than one owned partition (``__other__`` aside): their producers
        do not key by campaign_id, so each partition exports and decides on part of them."""
        seen: set[str] = set()
        several: set[str] = set()
        for state in self.states.values():
            for campaign in state.campaigns:
                if campaign in seen:
                    several.add(campaign)
                else:
                    seen.add(campaign)
        several.discard(OTHER)
        return len(several)

    def expire(self) -> list[Record]:
        now = self.clock()
        return [record for state in self.states.values() for record in expiry.expire(state, now)]
