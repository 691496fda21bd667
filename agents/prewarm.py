"""A restart's state, built from the local store's file while the worker waits for the group.

A restarted worker waits seconds for its assignment (the embedded broker's JoinGroup and
SyncGroup each wait half the session timeout). Meanwhile a thread brings the partitions it owned
last (the file says which) up to the changelog's end, reading the tail a crash left (the writes
acknowledged but not yet in the file) in whole fetches rather than through Faust's recovery, one
record at a time; then builds their states. At the hand-over a built state is taken only if the
file has not moved for that partition since it was read: no record came from the changelog in
between, so it is the state a rebuild would make then; any other partition is rebuilt as usual.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from stream.codec import partition_of_key
from stream.settings import Settings
from stream.state import PartitionState

from .local_store import (
    Identity,
    LocalRecords,
    changelog_reader,
    record_digest,
    stop_quietly,
)

log = logging.getLogger(__name__)

Build = Callable[[Iterable[int], list[tuple[bytes, bytes]]], dict[int, PartitionState]]
# A tail longer than this is left to Faust's recovery after the assignment: the head start is
# for what a crash leaves, not for a partition another worker owned for hours.
MAX_TAIL_RECORDS = 200_000
TAIL_TIMEOUT_SECONDS = 20.0


class Prewarm:
    def __init__(
        self, path: str | Path, identity: Identity, build: Build, settings: Settings | None = None
    ) -> None:
        self.path, self.identity, self.build = Path(path), identity, build
        self.topic = identity.changelog_topic
        self.settings = settings  # the broker to read the tail from; None: the file only
        self.tail_records = 0  # records of the changelog's tail written to the file here
        self.seconds: float | None = None  # how long reading and building took
        self.started = False
        # partition -> (the file's offset it was built at, the state); under _lock
        self._states: dict[int, tuple[int, PartitionState]] = {}
        self._records: dict[int, int] = {}  # partition -> the records it was built from
        self.taken_records = 0  # the records behind the states the last ``take`` gave
        self._lock = threading.Lock()
        self._taken_once = False
        self._abandoned = False
        self._done = threading.Event()

    @property
    def usable(self) -> bool:
        """Started, and not given up on by a hand-over."""
        return self.started and not self._abandoned

    def built(self) -> list[int]:
        with self._lock:
            return sorted(self._states)

    def start(self) -> Prewarm:
        """Build on a thread of its own (a daemon: a worker stopping meanwhile does not wait)."""
        self.started = True
        if not self.path.exists():
            self._done.set()
            return self
        threading.Thread(target=self._run, name="prewarm", daemon=True).start()
        return self

    def _run(self) -> None:
        began = time.perf_counter()
        try:
            local = LocalRecords(self.path, self.identity)
            try:
                if self.settings is not None and self.settings.broker:
                    try:
                        self.tail_records = asyncio.run(self._catch_up(local))
                    except Exception:  # the tail is left to Faust's recovery; the file is used
                        log.exception("prewarm: could not read the changelog's tail")
                if self._abandoned:
                    return
                marks, records = local.owned_snapshot(self.topic)
            finally:
                local.close()
            built = self.build(marks, records)
            counts = Counter(partition_of_key(key) for key, _ in records)
            with self._lock:
                self._records = {p: counts[p] for p in built}
                if not self._abandoned:  # a hand-over that could not wait went on without it
                    self._states = {p: (marks[p], state) for p, state in built.items()}
            log.info("prewarm: built partitions %s from %s", sorted(built), self.path)
        except Exception:  # only a head start: the hand-over rebuilds as if it never ran
            log.exception("prewarm: could not build from %s", self.path)
        finally:
            self.seconds = round(time.perf_counter() - began, 3)
            self._done.set()

    async def _catch_up(self, local: LocalRecords) -> int:
        """Write the changelog's records after the file's offset, for the partitions last owned,
        into the file (as recovery would, in order, a fetch at a time); how many were written.
        A partition the file no longer holds as far as this has written it (dropped meanwhile)
        is left alone from then on: a run after a drop would leave a gap."""
        from aiokafka import TopicPartition

        at = local.owned_offsets(self.topic)  # partition -> how far the file holds it
        if not at:
            return 0
        consumer = changelog_reader(
            self.settings,
            auto_offset_reset="none",
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        written = 0
        deadline = time.monotonic() + TAIL_TIMEOUT_SECONDS
        await asyncio.wait_for(consumer.start(), TAIL_TIMEOUT_SECONDS)
        try:
            tps = [TopicPartition(self.topic, p) for p in sorted(at)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, at[tp.partition] + 1)
            pending = set(tps)
            while pending and written < MAX_TAIL_RECORDS and time.monotonic() < deadline:
                if self._abandoned:
                    break
                batches = await consumer.getmany(*pending, timeout_ms=300)
                for tp, records in batches.items():
                    last = records[-1]
                    # The store's write: in order, never over newer records, never after a gap.
                    if local.apply(
                        self.topic,
                        tp.partition,
                        [(r.key, r.value) for r in records],
                        last.offset,
                        record_digest(last.key, last.value),
                        continues=at[tp.partition],
                    ):
                        at[tp.partition] = last.offset
                        written += len(records)
                    else:
                        log.warning("prewarm: partition %s was dropped meanwhile", tp.partition)
                        pending.discard(tp)
                for tp in list(pending):
                    # The fetch's high watermark (the embedded broker's ListOffsets is short).
                    mark = consumer.highwater(tp)
                    if mark is not None and await consumer.position(tp) >= mark:
                        pending.discard(tp)
        finally:
            await stop_quietly(consumer, TAIL_TIMEOUT_SECONDS)
        return written

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def abandon(self) -> None:
        """Stop reading the tail, and keep nothing built from here on (the hand-over rebuilt
        without it)."""
        with self._lock:
            self._abandoned = True
            self._states = {}

    def take(
        self, partitions: Iterable[int], offsets: Mapping[int, int]
    ) -> dict[int, PartitionState]:
        """The built states of ``partitions`` (being handed over) whose partition the file
        still holds at the offset they were built at (``offsets``: the file's now). The states
        of other partitions wait for the next hand-over only (a restart's first assignment can
        be partial), or ``drop_leftovers``."""
        wanted = set(partitions)
        with self._lock:
            states, self._states = self._states, {}
            if not self._taken_once:
                self._taken_once = True
                self._states = {p: built for p, built in states.items() if p not in wanted}
        taken = {
            p: state for p, (at, state) in states.items() if p in wanted and offsets.get(p) == at
        }
        self.taken_records = sum(self._records.get(p, 0) for p in taken)
        return taken

    def drop_leftovers(self) -> None:
        with self._lock:
            self._states = {}
