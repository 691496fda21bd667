"""Restart time against history: one worker folds a stream, is SIGKILLed and restarted on its
data dir (the local store's file) with its place in the group (static membership), at each step
of history; nothing is produced during the restart, so the time is the restart's own.

    python bench/restart.py [--steps 1000000,5000000] [--campaigns 5000]

Events come 100 a message keyed by campaign (five types, an hour of event time), so that five
million fold in minutes. Printed per step: the history folded, restart -> serving -> caught up
(lag 0 on every partition, the worker's own clock in /health), and the parts from the worker's
/health (process start, Faust's start and the group, the hand-over: recovery, reading the file,
building the state, the freeze), with the records restored and how many the changelog gave.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time

import orjson
from aiokafka import AIOKafkaProducer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agents.broker import EmbeddedBroker
from agents.topics import ensure_topics
from bench.backtest import MIX, funnel_event
from stream.events import EVENT_TYPES
from stream.settings import Settings
from tests.e2e.harness import WorkerProcess
from tests.soak import handover_parts, health_of

PER_MESSAGE = 100


async def produce(bootstrap: str, events: int, campaigns: int, first: int, seed: int) -> None:
    topics = dict(zip(EVENT_TYPES, Settings().topics.inputs()))
    rng = random.Random(seed)
    kinds, weights = [k for k, _ in MIX], [w for _, w in MIX]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        now = int(time.time() * 1000)
        pending = []
        for m in range(events // PER_MESSAGE):
            kind = rng.choices(kinds, weights)[0]
            campaign = f"camp-{rng.randrange(campaigns):05d}"
            body: list[dict] = []
            for i in range(PER_MESSAGE):
                occurred = now - rng.randrange(3_600_000)
                lead = (m + i) % 50
                body.append(
                    funnel_event(f"e{first + m}-{i}", kind, occurred, campaign, "search", lead)
                )
            pending.append(
                await producer.send(topics[kind], orjson.dumps(body), key=campaign.encode())
            )
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def lag(seen: dict) -> float | None:
    """Messages behind over every partition, from a ``/health`` answer (the worker's cheap probe:
    rendering a 5,000-campaign /metrics page costs the worker seconds); None if not known yet."""
    behind = seen.get("lag") or {}
    return sum(behind.values()) if behind else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="1000000,5000000", help="events of history, cumulative")
    parser.add_argument("--campaigns", type=int, default=5000)
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    log_dir = tempfile.mkdtemp(prefix="kpi-bench-restart-")
    print(
        f"== restart against history: {args.campaigns:,} campaigns; logs in {log_dir}", flush=True
    )
    with EmbeddedBroker() as broker:
        partitions = asyncio.run(ensure_topics(Settings(broker=broker.url)))

        def worker(n: int) -> WorkerProcess:
            return WorkerProcess(
                broker.url,
                "bench-restart",
                f"{log_dir}/worker-{n}.log",
                env={"KPI_INSTANCE_ID": "w", "KPI_DECISIONS": "off"},
                data_dir=f"{log_dir}/data",
            ).start()

        current = worker(0)
        produced = 0
        try:
            for n, step in enumerate(steps, 1):
                started = time.monotonic()
                asyncio.run(produce(broker.bootstrap, step - produced, args.campaigns, produced, n))
                produced = step
                while True:
                    seen = health_of(current, timeout=5)
                    if lag(seen) == 0 and len(seen.get("partitions") or []) == partitions:
                        break
                    time.sleep(1)
                print(
                    f"  {produced:,} events folded ({time.monotonic() - started:.0f}s)", flush=True
                )
                current.kill()
                killed_ms = time.time() * 1000
                restarted = time.monotonic()
                current = worker(n)
                while len(health_of(current, timeout=5).get("partitions") or []) < partitions:
                    time.sleep(0.1)
                serving = time.monotonic() - restarted
                drain = []  # (seconds since the restart, messages behind or None)
                while True:
                    seen = health_of(current, timeout=5)
                    handover = seen.get("handover") or {}
                    drain.append((time.monotonic() - restarted, lag(seen)))
                    if handover.get("caught_up_at_ms"):
                        break
                    time.sleep(0.2)
                caught = (handover["caught_up_at_ms"] - killed_ms) / 1000
                startup = seen.get("startup") or {}
                restored = seen.get("restored") or {}
                group = (handover["assigned_at_ms"] - startup["app_created_at_ms"]) / 1000
                refolded = seen.get("events_folded", 0)  # from before the last checkpoint
                print(
                    f"  after {produced:,} events: restart -> serving {serving:.1f}s, -> caught "
                    f"up {caught:.1f}s; process {(startup['began_at_ms'] - killed_ms) / 1000:.1f}s, "
                    f"Faust start + group {group:.1f}s, hand-over {handover['seconds']:.2f}s"
                    f"{handover_parts(handover)}; {restored.get('records', 0):,} records "
                    f"restored, {restored.get('read_from_changelog')} from the changelog; "
                    f"{refolded:,} events folded again",
                    flush=True,
                )
                print(
                    "    lag read from /health: "
                    + ", ".join(f"{t:.1f}s {b if b is None else f'{b:,.0f}'}" for t, b in drain),
                    flush=True,
                )
        finally:
            current.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
