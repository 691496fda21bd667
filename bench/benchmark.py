"""Throughput and latency of kpi-monitor against baselines measured in the same run.

    python bench/benchmark.py [--events 1000000] [--campaigns 100]

Phases, each on a fresh embedded broker so no run sees another's data:
1. one event per message: monitor vs a do-nothing Faust agent vs Quix Streams (a tumbling 1-minute
   count per campaign, bench/quix_baseline.py; ``pip install -e '.[bench]'``) vs plain aiokafka + orjson;
2. 100 events per message: the same four;
3. end-to-end latency (produced until visible in /metrics) at half the measured monitor rate;
4. scrape and memory: /metrics cost and worker RSS at 1,000 to 20,000 campaigns and under a flood
   of distinct campaign ids (see bench/scale.py).
Rates are taken from the 5% point to the end, so start-up and group joins are excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agents.broker import EmbeddedBroker, free_port

TOPIC = "marketing.impressions"
QUIX = "Quix Streams 3.28"
FAUST_PATH = "kpi-monitor, KPI_INGEST=faust"
CLICKS = "marketing.clicks"


def events(n: int, campaigns: int, seed: int = 1) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        c = f"camp-{rng.randrange(campaigns):03d}"
        out.append(
            (
                c,
                {
                    "event_id": f"e{i}",
                    "event_type": "impression",
                    "occurred_at": now - rng.randint(0, 60_000),
                    "campaign_id": c,
                    "channel": "search",
                    "cost": 0.002,
                },
            )
        )
    return out


async def preload(bootstrap: str, evs: list[tuple[str, dict]], per_message: int) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    grouped: dict[str, list[dict]] = {}
    for campaign, body in evs:
        grouped.setdefault(campaign, []).append(body)
    messages = 0
    try:
        pending = []
        for campaign, bodies in grouped.items():
            for i in range(0, len(bodies), per_message):
                chunk = bodies[i : i + per_message]
                value = orjson.dumps(chunk[0] if per_message == 1 else chunk)
                pending.append(await producer.send(TOPIC, value, key=campaign.encode()))
                messages += 1
                if len(pending) >= 20000:
                    await asyncio.gather(*pending)
                    pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return messages


async def create_topics(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    names = [
        "marketing.impressions",
        "marketing.clicks",
        "marketing.leads",
        "marketing.sales",
        "marketing.sales_contacts",
        "marketing.rejected",
    ]
    await admin.create_topics([NewTopic(n, 4, 1) for n in names])
    await admin.close()


async def plain_consumer(bootstrap: str, expect_events: int) -> float:
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    counts: dict[tuple, int] = {}
    seen = 0
    start_at = None
    try:
        while seen < expect_events:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10000)
            for records in batch.values():
                for record in records:
                    payload = orjson.loads(record.value)
                    for e in payload if isinstance(payload, list) else (payload,):
                        key = (e["campaign_id"], e["event_type"], e["occurred_at"] // 10_000)
                        counts[key] = counts.get(key, 0) + 1
                        seen += 1
            if start_at is None and seen >= expect_events * 0.05:
                start_at, start_seen = time.monotonic(), seen
    finally:
        await consumer.stop()
    return (seen - start_seen) / (time.monotonic() - start_at)


def spawn(args: list[str], env: dict | None = None, log=None, root: str = ROOT) -> subprocess.Popen:
    extra = {} if root == ROOT else {"PYTHONPATH": root}
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=root,
        env=dict(os.environ, **extra, **(env or {})),
        stdout=subprocess.PIPE if log is None else log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def noop_rate(broker: EmbeddedBroker, messages: int) -> float:
    return progress_rate(
        spawn(
            [
                "bench/noop_agent.py",
                "--broker",
                broker.url,
                "--topic",
                TOPIC,
                "--expect",
                str(messages),
                "--port",
                str(free_port()),
            ],
            env={"PYTHONPATH": ROOT},
        ),
        messages,
    )


def quix_rate(broker: EmbeddedBroker, events: int) -> float:
    return progress_rate(
        spawn(
            [
                "bench/quix_baseline.py",
                "--bootstrap",
                broker.bootstrap,
                "--topic",
                TOPIC,
                "--expect",
                str(events),
            ]
        ),
        events,
    )


def progress_rate(process: subprocess.Popen, expect: int) -> float:
    """Rate between the first and the last ``PROGRESS <count> <monotonic>`` line of ``process``
    (the first comes at 5%, so start-up and the group join are left out)."""
    points = []
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            if line.startswith("PROGRESS"):
                _, count, at = line.split()
                points.append((int(count), float(at)))
                if int(count) >= expect:
                    break
    finally:
        stop(process)
    if len(points) < 2:
        raise RuntimeError(f"{process.args} reported no progress; run it alone to see why")
    (c1, t1), (c2, t2) = points[0], points[-1]
    return (c2 - c1) / (t2 - t1)


def scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kpi_events_total{"):
            labels, value = line.rsplit(" ", 1)
            campaign = labels.split('campaign="', 1)[1].split('"', 1)[0]
            out[campaign] = out.get(campaign, 0) + float(value)
    return out


def folded(port: int) -> int:
    """Events folded so far, from the worker's cheap /health probe (a full scrape costs it CPU)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return orjson.loads(r.read())["events_folded"]
    except OSError:
        return 0


def start_monitor(
    broker: EmbeddedBroker, port: int, log, env: dict | None = None, root: str = ROOT
) -> subprocess.Popen:
    return spawn(
        [
            "-m",
            "agents.cli",
            "run",
            "--broker",
            broker.url,
            "--web-port",
            str(port),
            "--loglevel",
            os.environ.get("BENCH_LOGLEVEL", "warning"),
        ],
        env={"KPI_APP_ID": f"bench-{time.time_ns()}", "KPI_SESSION_TIMEOUT": "6s", **(env or {})},
        log=log,
        root=root,
    )


def monitor_rate(
    broker: EmbeddedBroker, expect_events: int, log, env: dict | None = None, root: str = ROOT
) -> float:
    port = free_port()
    process = start_monitor(broker, port, log, env, root)
    try:
        first = None
        while True:
            done = folded(port)
            now = time.monotonic()
            if first is None and done >= expect_events * 0.05:
                first = (done, now)
            if done >= expect_events:
                return (done - first[0]) / (now - first[1])
            if process.poll() is not None:
                raise RuntimeError("monitor exited; see the benchmark log")
            time.sleep(0.2)
    finally:
        stop(process)


BEFORE = "kpi-monitor, --before-root"


def throughput_phase(
    per_message: int, n: int, campaigns: int, log, before_root: str | None = None
) -> dict[str, float]:
    evs = events(n, campaigns)
    results = {}
    names = ["plain aiokafka+orjson", "do-nothing Faust agent", QUIX, FAUST_PATH, "kpi-monitor"]
    if before_root:
        names.insert(-1, BEFORE)
    for name in names:
        with EmbeddedBroker() as broker:
            asyncio.run(create_topics(broker.bootstrap))
            t = time.monotonic()
            messages = asyncio.run(preload(broker.bootstrap, evs, per_message))
            print(
                f"  preloaded {n:,} events in {messages:,} messages ({time.monotonic() - t:.1f}s) "
                f"for {name}",
                flush=True,
            )
            if name.startswith("plain"):
                rate = asyncio.run(plain_consumer(broker.bootstrap, n))
            elif name.startswith("do-nothing"):
                rate = noop_rate(broker, messages) * (n / messages)
            elif name == QUIX:
                rate = quix_rate(broker, n)
            elif name == FAUST_PATH:
                rate = monitor_rate(broker, n, log, {"KPI_INGEST": "faust"})
            elif name == BEFORE:
                rate = monitor_rate(broker, n, log, root=before_root)
            else:
                rate = monitor_rate(broker, n, log)
            results[name] = rate
            print(f"  {name:<24} {rate:>12,.0f} events/s", flush=True)
    return results


async def latency_phase(rate: float, seconds: float, campaigns: int, log) -> list[float]:
    with EmbeddedBroker() as broker:
        await create_topics(broker.bootstrap)
        port = free_port()
        process = start_monitor(broker, port, log)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=5)
        await producer.start()
        latencies = []
        try:
            while not scrape(port) and process.poll() is None:
                await producer.send(
                    TOPIC,
                    orjson.dumps(events(1, 1)[0][1] | {"campaign_id": "warmup"}),
                    key=b"warmup",
                )
                await asyncio.sleep(0.5)
            rng = random.Random(3)
            started = time.monotonic()
            sent = 0
            probe = 0
            next_probe = started + 1
            while time.monotonic() - started < seconds:
                due = int((time.monotonic() - started) * rate) - sent
                for _ in range(max(0, due)):
                    c = f"camp-{rng.randrange(campaigns):03d}"
                    body = {
                        "event_id": f"l{sent}",
                        "event_type": "impression",
                        "occurred_at": int(time.time() * 1000),
                        "campaign_id": c,
                    }
                    await producer.send(TOPIC, orjson.dumps(body), key=c.encode())
                    sent += 1
                if time.monotonic() >= next_probe:
                    probe += 1
                    name = f"probe-{probe}"
                    body = {
                        "event_id": name,
                        "event_type": "impression",
                        "occurred_at": int(time.time() * 1000),
                        "campaign_id": name,
                    }
                    await producer.send_and_wait(TOPIC, orjson.dumps(body), key=name.encode())
                    produced = time.monotonic()
                    # Each scrape costs the worker tens of ms (see README), so poll at 5 Hz:
                    # the figures carry up to 200 ms of polling resolution.
                    while name not in scrape(port) and time.monotonic() - produced < 30:  # noqa: ASYNC110
                        await asyncio.sleep(0.2)
                    latencies.append(time.monotonic() - produced)
                    next_probe = time.monotonic() + 1
                await asyncio.sleep(0.01)
            print(
                f"  sent {sent:,} events at {sent / (time.monotonic() - started):,.0f}/s "
                f"(asked for {rate:,.0f}/s)",
                flush=True,
            )
        finally:
            await producer.stop()
            stop(process)
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--latency-seconds", type=float, default=60)
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=0,
        help="events/s for the latency phase (default: half the measured monitor rate)",
    )
    parser.add_argument("--phases", default="single,batched,latency,scrape,memory")
    parser.add_argument(
        "--campaigns-list", default="1000,5000,20000", help="campaign counts for the scrape phase"
    )
    parser.add_argument(
        "--before-root",
        default=None,
        help="another checkout whose monitor the throughput phases also run (before/after)",
    )
    parser.add_argument(
        "--worker-root",
        default=ROOT,
        help="checkout to run the worker from in the scrape and memory phases",
    )
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    log_path = "/tmp/kpi-benchmark-workers.log"
    measured = []
    latencies: list[float] = []
    with open(log_path, "w") as log:
        if "single" in phases:
            print(
                f"== 1 event per message, {args.events:,} events, {args.campaigns} campaigns",
                flush=True,
            )
            measured.append(
                (
                    "1 event/message",
                    throughput_phase(1, args.events, args.campaigns, log, args.before_root),
                )
            )
        if "batched" in phases:
            print(f"== 100 events per message, {args.events:,} events", flush=True)
            measured.append(
                (
                    "100 events/message",
                    throughput_phase(100, args.events, args.campaigns, log, args.before_root),
                )
            )
        if "latency" in phases:
            half = args.latency_rate or (measured[0][1]["kpi-monitor"] / 2 if measured else 5000)
            print(f"== end-to-end latency at {half:,.0f} events/s, one per message", flush=True)
            latencies = asyncio.run(latency_phase(half, args.latency_seconds, args.campaigns, log))
        if phases & {"scrape", "memory"}:
            from bench.scale import run_scale

            run_scale(
                phases,
                [int(c) for c in args.campaigns_list.split(",")],
                os.path.abspath(args.worker_root),
                log,
            )
    print("\n== summary")
    for label, results in measured:
        monitor = results["kpi-monitor"]
        print(
            f"{label}: monitor {monitor:,.0f}/s; "
            f"monitor / do-nothing Faust = {monitor / results['do-nothing Faust agent']:.2f}x; "
            f"monitor / {QUIX} = {monitor / results[QUIX]:.2f}x; "
            f"monitor / its Faust per-message path = {monitor / results[FAUST_PATH]:.2f}x; "
            f"monitor / plain aiokafka = {monitor / results['plain aiokafka+orjson']:.2f}x"
            + (
                f"; monitor / --before-root = {monitor / results[BEFORE]:.2f}x"
                if BEFORE in results
                else ""
            )
        )
    if latencies:
        ordered = sorted(latencies)
        print(
            f"latency produced->/metrics over {len(ordered)} probes: "
            f"p50 {statistics.median(ordered) * 1000:.0f} ms, "
            f"p95 {ordered[int(0.95 * (len(ordered) - 1))] * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
        )
    print(f"(worker logs: {log_path})")


if __name__ == "__main__":
    main()
