"""Glue between Kafka messages and the pure per-partition state: decode, apply, collect records.

Holds the states of the partitions this worker owns; knows nothing about Faust.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from stream.codec import Record, decode_key, partition_of_key
from stream.events import Rejection, ValidationRules, decode_message
from stream.settings import Settings
from stream.state import PartitionState, StateConfig


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: int | None = None  # Kafka record timestamp (ms): the dedup horizon's clock


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


def state_config(settings: Settings) -> StateConfig:
    return StateConfig(
        bucket_ms=settings.bucket_seconds * 1000,
        retention_ms=settings.retention_seconds * 1000,
        dedup_horizon_ms=settings.dedup_horizon_seconds * 1000,
        dedup_max_ids=settings.dedup_max_ids_per_partition,
        lead_ttl_ms=settings.lead_ttl_seconds * 1000,
        max_campaigns=settings.max_campaigns_per_partition,
        max_channels=settings.max_channels_per_partition,
    )


class Pipeline:
    def __init__(self, settings: Settings, clock: Callable[[], int]) -> None:
        self.settings = settings
        self.clock = clock
        self.inputs = settings.topics.inputs()
        self.kind_of_topic = {topic: kind for kind, topic in enumerate(self.inputs)}
        self.rules = ValidationRules(settings.currency, settings.future_tolerance_seconds * 1000)
        self.config = state_config(settings)
        self.states: dict[int, PartitionState] = {}
        self.parked: dict[int, PartitionState] = {}  # revoked, maybe assigned again
        self.events_folded = 0  # valid events decoded by this process (replays excluded)

    def assign(
        self,
        partitions: Iterable[int],
        records: Iterable[tuple[bytes, bytes | None]],
        kept: Iterable[int] = (),
    ) -> None:
        """Own exactly ``partitions``. Those in ``kept`` (owned before and since, so nobody else
        wrote them) keep their live state; the others are rebuilt from the restored records."""
        wanted = set(partitions)
        keep = wanted & set(kept) & set(self.parked)
        by_partition: dict[int, list] = defaultdict(list)
        for key, value in records:
            partition = partition_of_key(key)
            if partition in wanted and partition not in keep and value is not None:
                by_partition[partition].append((decode_key(key), value))
        states = {}
        for partition in sorted(wanted):
            if partition in keep:
                states[partition] = self.parked[partition]
                continue
            state = PartitionState(partition, self.config)
            state.load(by_partition.get(partition, ()))
            states[partition] = state
        self.parked = {}
        self.states = states

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
            (self.inputs[kind], partition): offset
            for partition, state in self.states.items()
            for kind, offset in state.resume_offsets().items()
        }

    def process(self, messages: Iterable[Message]) -> BatchResult:
        now = self.clock()
        states = self.states
        kind_of_topic = self.kind_of_topic
        rules = self.rules
        touched: set[int] = set()
        dead: list[DeadLetter] = []
        events = replayed = unowned = 0
        for topic, partition, offset, value, timestamp in messages:
            state = states.get(partition)
            if state is None:
                unowned += 1
                continue
            kind = kind_of_topic[topic]
            if offset <= state.meta.checkpoint[kind]:
                replayed += 1
                continue
            valid, rejections = decode_message(value or b"", kind, now, rules)
            state.apply_message(kind, offset, valid, rejections, now, timestamp)
            events += len(valid)
            touched.add(partition)
            for rejection in rejections:
                dead.append(DeadLetter(topic, partition, offset, rejection))
        records = [record for p in sorted(touched) for record in states[p].finish_batch()]
        self.events_folded += events
        return BatchResult(records, dead, events, replayed, unowned)

    def expire(self) -> list[Record]:
        now = self.clock()
        return [record for state in self.states.values() for record in state.expire(now)]
