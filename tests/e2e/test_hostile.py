"""Huge batch messages beside normal traffic, on the embedded broker: the counts stay exact, the
huge ones are refused whole with their own reason, and the worker answers /health throughout."""

from __future__ import annotations

import asyncio
import threading
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.app import DEAD_LETTER_MAX_BYTES
from agents.broker import EmbeddedBroker
from stream.settings import Topics
from tests.e2e.harness import WorkerProcess, read_topic, total, wait_for

pytestmark = pytest.mark.e2e
CLICKS = Topics().clicks


def batch_of(campaign: str, count: int, at_ms: int) -> bytes:
    """A batch message of ``count`` click events, written without a million dicts."""
    head = f'{{"event_type":"click","occurred_at":{at_ms},"campaign_id":"{campaign}","cost":0.5,'
    return (
        b"["
        + ",".join(f'{head}"event_id":"{campaign}-{i}"}}' for i in range(count)).encode()
        + b"]"
    )


class HealthProbe(threading.Thread):
    """GET /health every 100 ms; the slowest answer and the failures."""

    def __init__(self, worker: WorkerProcess) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.slowest = 0.0
        self.failures: list[str] = []
        self.answers = 0
        self.worst_stall = 0.0  # the worker's own loop-lag figure, for the report
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                body = orjson.loads(self.worker.get("/health", timeout=5))
                self.worst_stall = max(self.worst_stall, body["loop_lag_worst_seconds"] or 0.0)
                self.answers += 1
            except OSError as exc:
                self.failures.append(repr(exc))
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.1)


async def produce_compressed(bootstrap: str, messages: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type="gzip",  # how a 100 MB message gets past a broker's size limit
        max_request_size=256 * 1024 * 1024,
        max_batch_size=256 * 1024 * 1024,
        linger_ms=50,
    )
    await producer.start()
    try:
        futures = [await producer.send(CLICKS, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def test_huge_messages_are_refused_whole_and_the_worker_stays_responsive(tmp_path):
    with EmbeddedBroker() as broker:
        worker = WorkerProcess(broker.url, "kpi-hostile", str(tmp_path / "worker.log")).start()
        probe = HealthProbe(worker)
        try:
            wait_for(lambda: worker.try_metrics(), 90, "the worker to serve /metrics")
            now = int(time.time() * 1000)
            steady = [
                orjson.dumps(
                    [
                        {
                            "event_type": "click",
                            "occurred_at": now,
                            "campaign_id": "steady",
                            "event_id": f"s-{i}-{j}",
                        }
                        for j in range(10)
                    ]
                )
                for i in range(300)
            ]
            huge = batch_of("huge", 1_048_600, now)
            large = batch_of("large", 100_000, now)
            allowed = batch_of("allowed", 9_000, now)  # under both bounds: folded in slices
            many = batch_of("many", 20_000, now)  # under the byte bound, over the event bound
            assert len(allowed) < len(many) < 4 << 20 < len(large) < len(huge)
            probe.start()
            # One key, so one partition and (as far as the fetch size allows) one fetch.
            messages = [(b"k", value) for value in steady[:150]]
            messages += [(b"k", huge), (b"k", large), (b"k", many), (b"k", allowed)]
            messages += [(b"k", value) for value in steady[150:]]
            asyncio.run(produce_compressed(broker.bootstrap, messages))

            def settled():
                m = worker.try_metrics()
                done = (
                    total(m, "kpi_events_total", campaign="steady") >= 3_000
                    and total(m, "kpi_events_rejected_total") >= 3
                )
                return m if done and total(m, "kpi_events_total", campaign="allowed") else None

            metrics = wait_for(settled, 120, "the batch to be folded")
            time.sleep(2)  # anything counted twice would show by now
            metrics = worker.metrics()
        finally:
            probe.stopped.set()
            probe.join(timeout=10)
            worker.stop()
            print(open(worker.log_path, errors="replace").read()[-3000:])

        assert total(metrics, "kpi_events_total", campaign="steady") == 3_000
        assert total(metrics, "kpi_events_total", campaign="allowed") == 9_000
        assert total(metrics, "kpi_events_total", campaign="huge") == 0
        assert total(metrics, "kpi_events_total", campaign="large") == 0
        assert total(metrics, "kpi_events_total", campaign="many") == 0
        rejected = {
            dict(labels)["reason"]: value
            for (name, labels), value in metrics.items()
            if name == "kpi_events_rejected_total" and value
        }
        assert rejected == {"message_too_large": 2, "too_many_events": 1}
        assert not probe.failures, probe.failures
        assert probe.answers > 10
        assert probe.slowest < 1.0, f"/health took {probe.slowest:.2f}s"

        dead = asyncio.run(read_topic(broker.bootstrap, "marketing.rejected", 3))
        assert len(dead) == 3
        originals = {len(value): value for value in (huge, large, many)}
        for record in dead:  # in the dead-letter topic's partitions, in any order
            headers = {k: v.decode() for k, v in record.headers}
            original = originals.pop(int(headers["kpi.original.bytes"]))
            expected = "too_many_events" if original is many else "message_too_large"
            assert headers["kpi.reason"] == expected
            assert record.value == original[:DEAD_LETTER_MAX_BYTES]
        assert not originals
        print(
            f"/health: {probe.answers} answers, slowest {probe.slowest * 1000:.0f} ms; "
            f"worst event-loop stall {probe.worst_stall * 1000:.0f} ms"
        )
