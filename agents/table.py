"""A Faust table whose changelog partition is the source partition written in each key.

Faust would take the partition from the "current event", which a batch (``take_events``) does
not have, or hash the key, which would scatter one source partition's records over many
changelog partitions. Keeping a partition's records in one changelog partition, in write order,
is what makes a restored prefix consistent (see ``stream.state``).

The live state is the pipeline's decoded ``PartitionState``; the store holds records only between
Faust's changelog recovery and ``take_records``, so a worker does not keep its state twice in
memory. With the local store (``agents.local_store``) the records stay on disk, the worker's own
writes are mirrored there once acknowledged, and a restart reads the file plus the changelog tail.

Records are sent as native producer batches, one per changelog
partition, instead of one ``publish_message`` per key: Faust's per-record path cost more than
the KPI work itself and stalled the stream whenever a batch wrote over 100 records ("producer
buffer full"). It is the app's own producer, so Faust still flushes it before every offset
commit, and Faust's recovery reads the changelog as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.types import TP, StoreT

from stream.codec import partition_of_key

from .local_store import LocalStore, record_digest

log = logging.getLogger(__name__)

# Sends one changelog partition's records; returns what to await for their acknowledgement.
ChangelogSink = Callable[[str, int, list], Awaitable[list[Awaitable] | None]]
# Reads changelog partitions whole: their latest record per key.
ColdReader = Callable[[str, set[int]], Awaitable[list[tuple[bytes, bytes]]]]
# Reads changelog partitions after the given offsets: (offset, key, value) per partition.
TailReader = Callable[[str, dict[int, int]], Awaitable[dict[int, list[tuple[int, bytes, Any]]]]]


class ChangelogRefused(RuntimeError):
    """The broker refused (or never acknowledged) a batch of the state's changelog."""


class PartitionedStateTable(faust.Table):
    on_recovered: Callable[[PartitionedStateTable], Awaitable[None]] | None = None

    def __init__(self, *args: Any, local_store: bool = False, **kwargs: Any) -> None:
        # Set before Faust builds the store (``data``): with it, restores read a local file
        # plus the changelog's tail (agents.local_store).
        self.use_local_store = local_store
        # Why the data dir cannot hold the local file this run (set before the store is built).
        self.local_store_unavailable: str | None = None
        super().__init__(*args, **kwargs)
        self._mirrored: asyncio.Future | None = None  # the last write's mirroring, for order
        self._unmirrored: set[int] = set()  # partitions whose mirroring failed: left to recovery
        # The last hand-over: live records restored, and how many recovery read from the
        # changelog for them (None: all of them, without a local store).
        self.restored: dict[str, int | None] = {"records": 0, "read_from_changelog": None}
        # The last hand-over's clock (wall ms): the group's assignment, and the state served
        # (restored and handed to the pipeline); what a takeover costs after a rebalance.
        self.handover: dict[str, float | None] = {
            "assigned_at_ms": None,
            "serving_at_ms": None,
            "seconds": None,
        }
        self._assigned_at: float | None = None
        self.handovers = 0
        self.handover_parts: dict[str, float] = {}  # what ``on_recovered`` timed of its work
        # Set once a hand-over brought partitions this worker did not hold (a takeover, a start).
        self.took_partitions = asyncio.Event()
        self.served = asyncio.Event()  # set once each hand-over is served (``handover``)
        # Where records go; tests without a broker capture them instead.
        self.changelog_sink: ChangelogSink = self._send_batches
        # Reads changelog partitions whole, when the local file cannot give them (set by the app).
        self.cold_reader: ColdReader | None = None
        # Reads changelog partitions after given offsets, to their end (set by the app).
        self.tail_reader: TailReader | None = None
        # Per changelog partition, the delivery of its last batch: the next batch of a partition
        # is sent only once the one before it is acknowledged (``_write``).
        self._inflight: dict[int, Awaitable] = {}
        # A batch the broker refused: nothing more is written, the worker stops (``refused``).
        self.refused: BaseException | None = None
        self.on_refused: Callable[[BaseException], Awaitable[None]] | None = None
        self._stopping: asyncio.Future | None = None  # the worker's stop, once refused
        # The agent and the expiry timer both write. Records are encoded synchronously just
        # before ``write`` is awaited, and the lock is FIFO, so the log keeps encoding order.
        self._write_lock = asyncio.Lock()
        self.newly_assigned: set[TP] = set()

    def _new_store(self) -> StoreT:
        if self.use_local_store:
            return LocalStore(
                "memory://",
                self.app,
                self,
                table_name=self.name,
                key_type=self.key_type,
                key_serializer=self.key_serializer,
                value_serializer=self.value_serializer,
                value_type=self.value_type,
                loop=self.loop,
                options=self.options,
            )
        return super()._new_store()

    def partition_for_key(self, key: Any) -> int | None:
        return partition_of_key(key)

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        # Faust's own diff of assignments (the revoke signal names every partition, eagerly).
        self.newly_assigned |= set(newly_assigned)
        self._assigned_at = time.time()
        if isinstance(self.data, LocalStore):  # what this hand-over reads, not the standbys' flow
            self.data.read_from_changelog = 0
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        recovered = time.time()
        await super().on_recovery_completed(active_tps, standby_tps)
        self.handover_parts = {}
        if self.on_recovered is not None:
            await self.on_recovered(self)
        if self.newly_assigned:
            self.took_partitions.set()
        self.newly_assigned = set()
        assigned_at = self._assigned_at
        if assigned_at is not None:
            served = time.time()
            self.handovers += 1
            self.handover = {
                "number": self.handovers,  # this process's hand-overs so far (> 1: rebalanced again)
                "assigned_at_ms": round(assigned_at * 1000),
                "serving_at_ms": round(served * 1000),
                "seconds": round(served - assigned_at, 3),
                # Faust's recovery (the changelog's tail), then the state built from the records.
                "recovery_seconds": round(recovered - assigned_at, 3),
                **self.handover_parts,
            }
            self.served.set()

    async def take_records(self, partitions: set[int]) -> list[tuple[bytes, bytes]]:
        """Remove and return the restored records of ``partitions`` from the store (with a local
        store: read them from its file, where they stay, once its queued writes are in, on its
        writer thread)."""
        store = self.data
        if isinstance(store, LocalStore):
            loop = asyncio.get_running_loop()  # one thread, in order: after the queued writes
            await self._complete_the_file(store, partitions)
            records, cold = await loop.run_in_executor(store.writer, store.take_records, partitions)
            read = store.read_from_changelog
            if cold:
                # The file cannot give them (it failed, or a write found a gap): recovery began
                # where the file said, so they are read from the changelog whole.
                if self.cold_reader is None:
                    raise RuntimeError(f"partitions {sorted(cold)} need the changelog read whole")
                log.warning(
                    "local store: partitions %s read from the changelog whole (%s)",
                    sorted(cold),
                    store.failed.get(min(cold), "not in the file"),
                )
                more = await self.cold_reader(self.changelog_topic.get_topic_name(), cold)
                records += more
                read += len(more)
            self.restored = {"records": len(records), "read_from_changelog": read}
            store.read_from_changelog = 0
            return records
        taken = [(k, v) for k, v in store.items() if partition_of_key(k) in partitions]
        key_partition = getattr(store, "_key_partition", {})
        for key, _ in taken:
            del store[key]
            key_partition.pop(key, None)
        self.restored = {"records": len(taken), "read_from_changelog": None}
        return taken

    async def _complete_the_file(self, store: LocalStore, partitions: set[int]) -> None:
        """Bring the file's partitions being handed over to the changelog's end: a recovery
        that stopped short (the embedded broker's end offsets) left records out, and the
        worker's next write, which follows the true end, would find a gap and cost a read of
        the whole partition. Written in order on the store's thread, continuing the file."""
        if self.tail_reader is None or store.disabled:
            return
        loop = asyncio.get_running_loop()
        topic = self.changelog_topic.get_topic_name()
        at = await loop.run_in_executor(store.writer, store.offsets, topic, partitions)
        try:
            tails = await self.tail_reader(topic, at)
        except Exception as exc:  # only the cost of a later read: the hand-over goes on
            log.warning("local store: the changelog's tail could not be read: %r", exc)
            return
        for partition, records in tails.items():
            if records:
                offset, key, value = records[-1]
                items = [(k, v) for _, k, v in records]
                store.write(
                    topic,
                    partition,
                    items,
                    offset,
                    record_digest(key, value),
                    continues=at[partition],
                )
                store.read_from_changelog += len(records)

    async def write(
        self, records: list[tuple[bytes, bytes | None]], *, acked: bool = False
    ) -> None:
        """Persist records in order, per changelog partition; a None value deletes. With
        ``acked``, return only once the broker has acknowledged them."""
        if not records:
            return
        if isinstance(self.data, LocalStore):
            await self.data.wait_for_room()
        async with self._write_lock:
            deliveries = await self._write(records)
        if acked:
            await asyncio.gather(*deliveries)

    async def _write(self, records: list[tuple[bytes, bytes | None]]) -> list[Awaitable]:
        """Send each changelog partition's records, after the partition's previous batch is
        acknowledged. A batch the broker refuses must be the partition's last: aiokafka sends
        the next queued batch of the partition all the same, and a later batch's checkpoint in
        the changelog would make a restore skip the refused batch's events for good. So nothing
        more is sent once one is refused, and the worker stops (``_refused``): its input offsets
        are not committed past it (``acknowledged``), and a restart folds them again."""
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, value in records:
            by_partition.setdefault(partition_of_key(key), []).append((key, value))
        topic = self.changelog_topic.get_topic_name()
        deliveries: list[Awaitable] = []
        for partition, items in by_partition.items():
            previous = self._inflight.get(partition)
            if previous is not None:
                with contextlib.suppress(Exception):  # its failure is ``refused``'s to report
                    await asyncio.shield(previous)
            if self.refused is not None:
                raise ChangelogRefused(f"the changelog refused a batch: {self.refused!r}")
            try:
                sent = await self.changelog_sink(topic, partition, items) or []
            except Exception as exc:  # a batch refused inside a write of several batches
                self._refuse(exc)
                raise ChangelogRefused(f"the changelog refused a batch: {exc!r}") from exc
            for delivery in sent:
                self._watch(partition, delivery)
            deliveries += sent
            if sent and isinstance(self.data, LocalStore):
                self._mirror(topic, partition, items, sent)
        return deliveries

    def _watch(self, partition: int, delivery: Awaitable) -> None:
        """Follow a batch's delivery (the partition's latest in flight): a refusal latches."""
        future = asyncio.ensure_future(delivery)
        self._inflight[partition] = future

        def done(finished: asyncio.Future) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                self._refuse(finished.exception())

        future.add_done_callback(done)

    def _refuse(self, exc: BaseException | None) -> None:
        """A changelog batch was refused: nothing more is written, and the worker stops."""
        if self.refused is not None or exc is None:
            return
        self.refused = exc
        log.critical(
            "the broker refused a batch of the state's changelog (%r): nothing more is "
            "written and the worker stops; its input offsets are not committed past the "
            "batch, so a restart folds its events again",
            exc,
        )
        if self.on_refused is not None:
            self._stopping = asyncio.ensure_future(self.on_refused(ChangelogRefused(repr(exc))))

    async def acknowledged(self) -> bool:
        """Whether every changelog batch sent so far is acknowledged (waiting for those in
        flight): False once one was refused. Input offsets are committed only after this."""
        pending = list(self._inflight.values())
        if pending:
            await asyncio.gather(*(asyncio.shield(p) for p in pending), return_exceptions=True)
        return self.refused is None

    def _mirror(
        self, topic: str, partition: int, items: list[tuple[bytes, bytes | None]], sent: list
    ) -> None:
        """Once the broker has acknowledged ``items``, queue them for the local store's file,
        after the writes before them (one chain of acknowledgements, one writer thread: the file
        never holds a write without those before); the writer writes them, off the event loop."""
        previous = self._mirrored
        store = self.data
        assert isinstance(store, LocalStore)

        async def mirror() -> None:
            if previous is not None:
                await asyncio.shield(previous)
            if partition in self._unmirrored:
                return
            try:
                last = (await asyncio.gather(*sent))[-1]
            except Exception as exc:  # the file is a cache: recovery reads more
                log.warning("local store: partition %s no longer mirrored: %r", partition, exc)
                self._unmirrored.add(partition)
                await asyncio.wrap_future(store.forget(topic, partition, repr(exc)))
                return
            key, value = items[-1]
            # Queued, not awaited: the writer thread keeps the queue's order, and a chain that
            # also waited for each commit only fell further behind a fast fold (the queue's
            # bound is ``LocalStore.wait_for_room``, which the worker's writes wait on). The
            # run's records are consecutive in the log (only this worker writes the partition):
            # it follows offset ``last - len(items)``, which the file must hold (a file short of
            # it, after a short recovery or a drop elsewhere, would get a gap: refused).
            store.write(
                topic,
                partition,
                items,
                last,
                record_digest(key, value),
                continues=last - len(items),
            )

        self._mirrored = asyncio.ensure_future(mirror())

    async def _send_batches(
        self, topic: str, partition: int, items: list[tuple[bytes, bytes | None]]
    ) -> list[Awaitable]:
        """One partition's records as producer batches (up to ``producer_max_batch_size``); a
        batch after the first is sent once the one before it is acknowledged, so that no batch
        follows a refused one in the changelog (see ``_write``)."""
        # The aiokafka producer behind Faust's: a private attribute, untyped in Faust.
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        deliveries: list[asyncio.Future] = []

        async def send(batch: Any) -> None:
            if deliveries:
                await deliveries[-1]  # raises if the broker refused it: nothing more is sent
            count = batch.record_count()
            sent = await producer.send_batch(batch, topic, partition=partition)
            delivery = asyncio.ensure_future(_last_offset(sent, count))
            self._watch(partition, delivery)  # followed at once: a refusal latches, whoever waits
            deliveries.append(delivery)

        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                await send(batch)
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"state record {key[:80]!r} is larger than a producer batch")
        if batch.record_count():
            await send(batch)
        return list(deliveries)


async def _last_offset(delivery: Awaitable, count: int) -> int:
    """The offset of a sent batch's last record, once acknowledged (the result is its first)."""
    metadata = await delivery
    return int(metadata.offset) + count - 1
