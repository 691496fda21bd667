"""Real processes for end-to-end tests: the embedded broker, kpi-monitor workers, a producer."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.broker import broker_binary, free_port, stop_process
from tests.scrape import Samples, samples_of, total  # noqa: F401 (re-exported for the e2e tests)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class WorkerProcess:
    broker_url: str
    app_id: str
    log_path: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra KPI_* settings
    token: str = ""  # KPI_WEB_TOKEN: every request then carries it
    # The worker's clock this far ahead of the machine's (libfaketime: Debian ``faketime``), for
    # what happens at a campaign's midnight without waiting for one.
    clock_ahead_s: float = 0.0
    data_dir: str = ""  # KPI_DATA_DIR (the local store's file): default, one of its own

    def start(self) -> WorkerProcess:
        env = dict(
            os.environ,
            KPI_APP_ID=self.app_id,
            KPI_SESSION_TIMEOUT="6s",
            KPI_DATA_DIR=self.data_dir or f"/tmp/kpi-e2e-{self.app_id}-{self.port}",
            PYTHONUNBUFFERED="1",
            **self.env,
        )
        if self.token:
            env["KPI_WEB_TOKEN"] = self.token
        self._log = open(self.log_path, "ab")
        ahead = ["faketime", "-f", f"+{self.clock_ahead_s:.3f}s"] if self.clock_ahead_s else []
        self.process = subprocess.Popen(
            [
                *ahead,
                sys.executable,
                "-m",
                "agents.cli",
                "run",
                "--broker",
                self.broker_url,
                "--web-port",
                str(self.port),
                "--loglevel",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def get(self, path: str, timeout: float = 5) -> bytes:
        """GET a page of this worker (with its token, if it has one)."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def metrics(self) -> Samples:
        return samples_of(self.get("/metrics").decode())

    def try_metrics(self) -> dict:
        try:
            return self.metrics()
        except OSError:
            return {}

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no commit."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "_log", None):
            self._log.close()


# The shipped CTR rule on windows short enough for a test (10 s buckets, a 1-minute window): each
# campaign against its plan (the demo publishes a CTR target per channel).
CTR_COLLAPSE_TEST_RULES = """
rules:
  - name: ctr_collapse
    summary: CTR collapsed
    kpi: ctr
    window: 1m
    op: "<"
    threshold: {target: ctr, factor: 0.25}
    confident: true
    min_volume: {event_type: impression, count: 600}
    for: 10s
    severity: page
    may_pause: true
"""


def demo_traffic(broker_url: str, log, incident_after_s: int = 30) -> subprocess.Popen:
    """``kpi-monitor demo-traffic`` at 6x its scale: its incidents after ``incident_after_s``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents.cli",
            "demo-traffic",
            "--broker",
            broker_url,
            "--scale",
            "6",
            "--incident-after",
            str(incident_after_s),
            "--seconds",
            "600",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def produce(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records.extend(tp_records)
    finally:
        await consumer.stop()
    return records


@contextmanager
def guarded_broker(tmp_path: Path, schemas: dict[str, dict]) -> Iterator[str]:
    """The embedded broker with its schema registry on (``--schema-registry``): a record of a
    topic in ``schemas`` that does not match its JSON schema is refused by the broker itself
    (aiokafka sees UnknownError; the record's whole batch fails). Removing a schema's file
    (``tmp_path / "registry" / f"{topic}.json"``) lifts it at the next produce. Yields the
    broker's kafka:// URL."""
    registry = tmp_path / "registry"
    registry.mkdir(exist_ok=True)
    for topic, schema in schemas.items():
        (registry / f"{topic}.json").write_bytes(orjson.dumps(schema))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    # Tansu reads a file:// registry relative to its working directory, whatever the URL.
    command = [broker_binary(), "broker", "--listener-url", address]
    command += ["--advertised-listener-url", address, "--storage-engine", "memory://tansu/"]
    command += ["--schema-registry", "file://./registry"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the broker exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the broker did not listen"
                time.sleep(0.1)
        yield f"kafka://127.0.0.1:{port}"
    finally:
        stop_process(process)
