"""Faust's aiokafka transport with a configurable fetch long-poll.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its consumer. Apache Kafka answers a fetch as soon as
data arrives, so that only bounds idle polling; the embedded broker holds every fetch for its full
wait (measured: ~450 ms per round at 1500 ms, ~6 ms at 100 ms), which put seconds of latency between
an event and its metric. ``KPI_FETCH_MAX_WAIT`` sets it (default 100 ms).
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def app_class(fetch_max_wait_ms: int) -> type[faust.App]:
    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when its fetcher starts
            return consumer

    class KpiConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = KpiConsumer

    class KpiApp(faust.App):
        def _new_transport(self) -> Transport:
            return Transport(self.conf.broker_consumer, self)

    return KpiApp
