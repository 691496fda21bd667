"""Faust's aiokafka transport, customised where kpi-monitor needs it.

- **Fetch long-poll.** Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. Apache Kafka
  answers a fetch as soon as data arrives, so that only bounds idle polling; the embedded broker
  holds every fetch for its full wait (measured: ~450 ms per round at 1500 ms, ~6 ms at 100 ms),
  which put seconds of latency between an event and its metric. ``KPI_FETCH_MAX_WAIT`` sets it.
- **Resume from the state's checkpoints.** After recovery Faust seeks every partition to its
  committed offset. That offset can be ahead of the state (the embedded broker's wrong end offsets
  make a changelog restore stop short), and then events would be lost; or behind it (commits lag),
  and then work is repeated. So right after Faust's own seek the consumer seeks again to where the
  state says it is complete: ``KpiApp.resume_positions``.
- **No fixed second at start.** Faust's table manager sleeps 1 s before it registers tables.
- **Seeks on the consumer's thread.** Faust seeks from the app's thread, racing aiokafka's fetcher
  on the consumer thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from time import monotonic
from typing import Any, ClassVar, Protocol

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.web import drivers as web_drivers

ResumePositions = Callable[[], Mapping[tuple[str, int], int]]


def app_class(fetch_max_wait_ms: int) -> type[KpiApp]:
    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when its fetcher starts
            return consumer

    class ConsumerWithThread(KpiConsumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = ConsumerWithThread

    class App(KpiApp):
        def _new_transport(self) -> Transport:
            return Transport(self.conf.broker_consumer, self)

    return App


class KpiApp(faust.App):
    # (topic, partition) -> next offset to read, from the state; set by whoever owns the state.
    resume_positions: ResumePositions | None = None
    # Whole fetched batches of its topics go here, past Faust's per-message path; None: Faust's.
    batch_handler: BatchHandler | None = None
    # Whether every state changelog batch sent is acknowledged (waiting for those in flight):
    # input offsets are committed only then (``KpiConsumer._commit_offsets``).
    changelog_acknowledged: Callable[[], Awaitable[bool]] | None = None

    def _new_web(self) -> Any:
        driver = web_drivers.by_url(self.conf.web)

        class Web(driver):  # type: ignore[valid-type,misc]
            # Faust's placeholder index ({"status": "OK"}) would hold "/": the live page does.
            production_blueprints: ClassVar[list] = []

        return Web(self)


class KpiConsumer(faust_aiokafka.Consumer):
    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        """Faust's commit, once the state's changelog holds everything folded so far: an input
        offset committed past a batch whose changelog records the broker refused would make
        that batch's events lost to every later reader of the group."""
        acknowledged = getattr(self.app, "changelog_acknowledged", None)
        if acknowledged is not None and not await acknowledged():
            self.log.error("not committing offsets: a state changelog batch was refused")
            return False
        return await super()._commit_offsets(offsets, start_new_transaction)

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop, but records of the batch handler's topics go to it a whole fetch
        at a time: Faust hands each message through the conductor, a channel and the stream
        (~3 event-loop turns and ~95 us a message, measured), which bounds one event per
        message to ~11k/s. Other topics (changelogs) keep Faust's path."""
        handler = getattr(self.app, "batch_handler", None)
        if handler is None:
            return await super()._drain_messages(fetcher)
        stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        read_offset = self._read_offset
        try:
            while not (stopped() or fetcher_stopped()):
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    # As Faust's getmany: seek back while a rebalance holds the flow. The
                    # assignment can change under the seek; that must not stop the fetch loop.
                    try:
                        await self.perform_seek()
                    except Exception as exc:
                        self.log.warning("exception performing seek when flow not active %r", exc)
                    continue
                generation = self.app.consumer_generation_id
                batch: list[tuple[TP, list[Any]]] = []
                for tp, tp_records in records.items():
                    if (
                        active is not None
                        and tp not in active
                        and tp not in self._buffered_partitions
                    ):
                        continue
                    # As Faust's loop: after a seek this is the next offset to read, after a
                    # message the last one read (the state skips what it already holds).
                    floor = read_offset[tp]
                    if floor is not None and tp_records[0].offset < floor:
                        tp_records = [r for r in tp_records if r.offset >= floor]
                    if not tp_records:
                        continue
                    if tp.topic in handler.topics:
                        batch.append((tp, tp_records))
                    else:
                        for record in tp_records:
                            await self.wait_first(
                                self.callback(self._to_message(tp, record)),
                                self.suspend_flow.wait(),
                            )
                            read_offset[tp] = record.offset
                if (
                    not batch
                    or not self.flow_active
                    or self.app.consumer_generation_id != generation
                ):
                    continue  # a rebalance began: the new owner (or the seek) reads them again
                await handler(batch)
                self._batch_done(batch, self.assignment(), self.highwater)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    def _batch_done(
        self,
        batch: list[tuple[TP, list[Any]]],
        assignment: set[TP],
        highwater: Callable[[TP], int | None],
    ) -> None:
        """What Faust's per-message path records for each message: the read offset, the ack
        (so the commit timer commits it and lag tools stay true), and the monitor's counts."""
        monitor = self.app.monitor
        now = monotonic()
        for tp, tp_records in batch:
            last = tp_records[-1].offset
            # What a stream records per event: without it Faust's consumer logs "Stream has not
            # started processing" for every input partition after stream_processing_timeout.
            monitor.stream_inbound_time[tp] = now
            self._read_offset[tp] = last
            monitor.messages_received_total += len(tp_records)
            monitor.messages_received_by_topic[tp.topic] += len(tp_records)
            monitor.tp_read_offsets[tp] = last
            mark = highwater(tp)
            if mark is not None:
                monitor.track_tp_end_offset(tp, mark)
            if tp not in assignment:
                continue
            committed = self._committed_offset[tp]
            acked_index, acked = self._acked_index[tp], self._acked[tp]
            for record in tp_records:
                offset = record.offset
                if (committed is None or offset >= committed) and offset not in acked_index:
                    acked_index.add(offset)
                    acked.append(offset)
                    self._n_acked += 1

    async def _seek(self, partition: TP, offset: int) -> None:
        # On the consumer's own thread: Faust calls aiokafka's seek from the app's thread, and
        # the seek deletes the partition's fetched records while the consumer thread may be
        # draining them (a worker taking over partitions crashed with KeyError in aiokafka's
        # fetched_records; robinhood/aiokafka#19).
        thread = self._thread
        await thread.call_thread(thread._ensure_consumer().seek, partition, offset)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        positions = getattr(self.app, "resume_positions", None)
        if positions is None:
            return
        assignment = self.assignment()
        for (topic, partition), offset in positions().items():
            tp = TP(topic, partition)
            if tp in assignment:
                await self.seek(tp, offset)


class TablesAtOnce(faust.tables.TableManager):
    """Faust's table manager without the second it sleeps at start before it registers the
    tables (for tables declared once the worker runs): ours are declared before the app starts,
    and a restarted worker joined its group a second later than it could."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class BatchHandler(Protocol):
    """Takes every fetched record of the topics it names, a whole fetch at a time."""

    topics: frozenset[str]

    async def __call__(self, batch: list[tuple[TP, list[Any]]]) -> None: ...
