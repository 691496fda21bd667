"""Scale phases of the benchmark: /metrics cost and worker memory at the campaign counts users run.

    python bench/benchmark.py --phases scrape,memory [--campaigns-list 1000,5000,20000]

scrape: per campaign count, a fresh broker is preloaded with every campaign's last hour (all five
    event types at 12 points of the hour); once the worker has folded it, live traffic keeps
    campaigns changing while /metrics is scraped every 2 s for over a minute (so one scrape
    crosses a bucket boundary, when every window moves). Reported: the worker's own render time
    (p50 and max), series and bytes per scrape, series per campaign, the worst event-loop stall
    while scrapes ran (the worker's 10 ms ticker), and worker RSS.
memory: worker RSS after (a) 1,000,000 events with 1,000,000 distinct campaign ids (a producer
    that puts user ids in campaign_id) and (b) 10,000 campaigns with an hour of 1-minute buckets
    of all five event types (3,000,000 events).

``--worker-root DIR`` runs the worker from another checkout (e.g. the previous release) with
this script's traffic, for before/after figures in the same run.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import orjson
from aiokafka import AIOKafkaProducer

from agents.broker import EmbeddedBroker, free_port
from stream.events import EVENT_TYPES
from stream.settings import Topics

TOPICS = dict(zip(EVENT_TYPES, Topics().inputs()))  # event type -> default topic
MIN = 60_000


def campaign_hour(campaign: str, now_ms: int, points: int, seq: int) -> dict[str, list[dict]]:
    """One campaign's last hour: at each of ``points`` times, one event of every type; each lead
    is contacted three minutes later."""
    out: dict[str, list[dict]] = {t: [] for t in TOPICS}
    step = 60 * MIN // points
    for i in range(points):
        at = now_ms - 60 * MIN + 4 * MIN + i * step
        base = {"campaign_id": campaign, "channel": ("search", "social", "display")[seq % 3]}
        lead = f"{campaign}-L{i}"
        out["impression"].append(
            {
                **base,
                "event_id": f"{campaign}-i{i}",
                "event_type": "impression",
                "occurred_at": at,
                "cost": 0.002,
            }
        )
        out["click"].append(
            {
                **base,
                "event_id": f"{campaign}-c{i}",
                "event_type": "click",
                "occurred_at": at,
                "cost": 0.4,
            }
        )
        out["lead"].append(
            {
                **base,
                "event_id": f"{campaign}-l{i}",
                "event_type": "lead",
                "occurred_at": at,
                "lead_id": lead,
            }
        )
        out["sale"].append(
            {
                **base,
                "event_id": f"{campaign}-s{i}",
                "event_type": "sale",
                "occurred_at": at,
                "value": 25.0,
                "currency": "USD",
                "lead_id": lead,
            }
        )
        out["sales_contact"].append(
            {
                **base,
                "event_id": f"{campaign}-k{i}",
                "event_type": "sales_contact",
                "occurred_at": min(at + 3 * MIN, now_ms),
                "lead_id": lead,
            }
        )
    return out


async def send_batches(bootstrap: str, batches, label: str) -> int:
    """Send (topic, key, [events]) as one JSON-array message each; print progress."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    sent = events = 0
    pending = []
    started = time.monotonic()
    try:
        for topic, key, body in batches:
            pending.append(await producer.send(topic, orjson.dumps(body), key=key))
            sent += 1
            events += len(body)
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                print(f"\r  {label}: {events:,} events sent", end="", flush=True)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    print(
        f"\r  {label}: {events:,} events in {sent:,} messages ({time.monotonic() - started:.0f}s)",
        flush=True,
    )
    return events


def hour_batches(campaigns: int, points: int, now_ms: int, per_message: int = 100):
    for c in range(campaigns):
        name = f"campaign-{c:06d}"
        for event_type, evs in campaign_hour(name, now_ms, points, c).items():
            for i in range(0, len(evs), per_message):
                yield TOPICS[event_type], name.encode(), evs[i : i + per_message]


def hostile_batches(ids: int, now_ms: int, per_message: int = 100):
    rng = random.Random(7)
    for start in range(0, ids, per_message):
        body = [
            {
                "event_id": f"h{i}",
                "event_type": "impression",
                "occurred_at": now_ms - rng.randrange(MIN),
                "campaign_id": f"user-{i:07d}-{rng.getrandbits(32):08x}",
                "channel": "web",
            }
            for i in range(start, min(ids, start + per_message))
        ]
        yield TOPICS["impression"], f"k{start}".encode(), body


class Worker:
    def __init__(self, broker: EmbeddedBroker, root: str, log, env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.cli",
                "run",
                "--broker",
                broker.url,
                "--web-port",
                str(self.port),
                "--loglevel",
                "warning",
            ],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(
                os.environ,
                PYTHONPATH=root,
                KPI_APP_ID=f"bench-{time.time_ns()}",
                KPI_SESSION_TIMEOUT="6s",
                **env,
            ),
        )

    def get(self, path: str, timeout: float = 60) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.read()

    def health(self) -> dict:
        try:
            return orjson.loads(self.get("/health", 5))
        except OSError:
            return {}

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident set size."""
        fields = {}
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                fields[name] = value
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def wait_folded(self, events: int, timeout: float = 900) -> float:
        started = time.monotonic()
        last = -1
        while True:
            done = self.health().get("events_folded", 0)
            if done >= events:
                return time.monotonic() - started
            if self.process.poll() is not None:
                raise RuntimeError("worker exited; see the benchmark log")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"worker folded {done:,} of {events:,} events in {timeout}s")
            if done != last:
                print(f"\r  worker folded {done:,} / {events:,}", end="", flush=True)
                last = done
            time.sleep(0.5)

    def stop(self) -> None:
        from bench.benchmark import stop

        stop(self.process)


def live_traffic(
    bootstrap: str, campaigns: int, rate: float, stop_at: threading.Event
) -> threading.Thread:
    """One event per message at ``rate`` events/s over all campaigns, until ``stop_at`` is set."""

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5)
        await producer.start()
        rng = random.Random(11)
        sent = 0
        started = time.monotonic()
        try:
            while not stop_at.is_set():
                due = int((time.monotonic() - started) * rate) - sent
                for _ in range(max(0, due)):
                    c = f"campaign-{rng.randrange(campaigns):06d}"
                    event_type = rng.choice(
                        ("impression",) * 6 + ("click", "lead", "sale", "sales_contact")
                    )
                    body = {
                        "event_id": f"live-{sent}",
                        "event_type": event_type,
                        "occurred_at": int(time.time() * 1000),
                        "campaign_id": c,
                        "lead_id": f"{c}-live-{sent % 50}",
                        "value": 10.0,
                        "currency": "USD",
                    }
                    await producer.send(TOPICS[event_type], orjson.dumps(body), key=c.encode())
                    sent += 1
                await asyncio.sleep(0.01)
        finally:
            await producer.stop()

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    return thread


def scrape_phase(
    campaigns: int, root: str, log, seconds: float = 66, live_rate: float = 2000
) -> dict:
    from bench.benchmark import create_topics

    now = int(time.time() * 1000)
    with EmbeddedBroker() as broker:
        asyncio.run(create_topics(broker.bootstrap))
        events = asyncio.run(
            send_batches(
                broker.bootstrap, hour_batches(campaigns, 12, now), f"{campaigns:,} campaigns"
            )
        )
        worker = Worker(broker, root, log, {})
        stop_traffic = threading.Event()
        try:
            took = worker.wait_folded(events)
            print(f"\r  worker folded {events:,} events in {took:.0f}s", flush=True)
            live_traffic(broker.bootstrap, campaigns, live_rate, stop_traffic)
            worker.get("/metrics")  # the first, cold scrape is reported apart
            renders, walls, stalls, stall_cpu, gc_pauses = [], [], [], [], []
            stall_stacks: list[list[str]] = []
            stall_samples: list[list[list[str]]] = []
            series = size = 0
            per_campaign: Counter = Counter()
            ended = time.monotonic() + seconds
            first = None
            while time.monotonic() < ended:
                worker.health()  # resets the worst stall
                started = time.monotonic()
                body = worker.get("/metrics")
                walls.append(time.monotonic() - started)
                health = worker.health()
                stalls.append(health.get("loop_lag_worst_seconds", float("nan")))
                stall_cpu.append(health.get("loop_lag_worst_cpu_seconds", float("nan")))
                stall_stacks.append(health.get("loop_lag_worst_stack") or [])
                stall_samples.append(health.get("loop_lag_worst_samples") or [])
                worst_gc = health.get("gc_pause_worst") or {}
                gc_pauses.append(
                    (
                        worst_gc.get("seconds", float("nan")),
                        worst_gc.get("generation"),
                        worst_gc.get("cpu_seconds"),
                        worst_gc.get("collected"),
                    )
                )
                renders.append(health.get("last_metrics_render_seconds", walls[-1]))
                if first is None:
                    first = body
                time.sleep(2)
            text = first.decode()  # type: ignore[union-attr]
            size = len(first)  # type: ignore[arg-type]
            lines = [line for line in text.splitlines() if line and not line.startswith("#")]
            series = len(lines)
            for line in lines:
                if 'campaign="' in line:
                    per_campaign[line.split('campaign="', 1)[1].split('"', 1)[0]] += 1
            rss = worker.rss_mb()
            tracked = worker.health().get("campaigns", len(per_campaign))
        finally:
            stop_traffic.set()
            worker.stop()
    result = {
        "campaigns": campaigns,
        "tracked": tracked,
        "series": series,
        "bytes": size,
        "series_per_campaign": max(per_campaign.values()) if per_campaign else 0,
        "render_p50": statistics.median(renders),
        "render_max": max(renders),
        "scrape_wall_max": max(walls),
        "stall_max": max(stalls),
        "stall_cpu": stall_cpu[stalls.index(max(stalls))],
        "stall_stack": stall_stacks[stalls.index(max(stalls))],
        "stall_samples": stall_samples[stalls.index(max(stalls))],
        "gc_pause_max": max(gc_pauses, key=lambda p: p[0])[0],
        "gc_pause_generation": max(gc_pauses, key=lambda p: p[0])[1],
        "gc_pause_cpu": max(gc_pauses, key=lambda p: p[0])[2] or 0.0,
        "gc_pause_collected": max(gc_pauses, key=lambda p: p[0])[3],
        "scrapes": len(renders),
        "rss_mb": rss[0],
    }
    print(
        f"  {campaigns:>6,} campaigns ({tracked:,} tracked): {series:,} series "
        f"({result['series_per_campaign']} per campaign), {size / 1e6:.1f} MB; render p50 "
        f"{result['render_p50'] * 1000:.0f} ms, max {result['render_max'] * 1000:.0f} ms over "
        f"{len(renders)} scrapes; worst loop stall {result['stall_max'] * 1000:.0f} ms "
        f"({result['stall_cpu'] * 1000:.0f} ms of it on the CPU; worst "
        f"garbage collection {result['gc_pause_max'] * 1000:.0f} ms, generation "
        f"{result['gc_pause_generation']}, {result['gc_pause_cpu'] * 1000:.0f} ms of CPU, {result['gc_pause_collected']} "
        "objects freed); "
        f"RSS {rss[0]:.0f} MB",
        flush=True,
    )
    if result["stall_stack"]:
        print("  the loop's thread during the worst stall (innermost last):")
        for frame in result["stall_stack"]:
            print(f"    {frame}")
    if result["stall_samples"]:
        print("  sampled every 10 ms once 30 ms late (the innermost frames of the project):")
        for sample in result["stall_samples"]:
            print(f"    {_own_frames(sample)}")
    return result


def _own_frames(stack: list[str], keep: int = 3) -> str:
    """The innermost frames of a stack, each as folder/file:line function."""
    own = ["/".join(f.split("site-packages/", 1)[-1].rsplit("/", 2)[-2:]) for f in stack]
    return " > ".join(own[-keep:])


def memory_phase(name: str, batches, root: str, log, env: dict[str, str]) -> dict:
    from bench.benchmark import create_topics

    with EmbeddedBroker() as broker:
        asyncio.run(create_topics(broker.bootstrap))
        events = asyncio.run(send_batches(broker.bootstrap, batches, name))
        worker = Worker(broker, root, log, env)
        try:
            took = worker.wait_folded(events)
            time.sleep(12)  # one expiry tick and settle
            rss, peak = worker.rss_mb()
            health = worker.health()
            started = time.monotonic()
            body = worker.get("/metrics", timeout=600)
            scrape = time.monotonic() - started
        finally:
            worker.stop()
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    print(
        f"\r  {name}: folded in {took:.0f}s; RSS {rss:.0f} MB (peak {peak:.0f} MB); "
        f"{health.get('campaigns', '?')} campaigns tracked; /metrics {series:,} series in "
        f"{scrape * 1000:.0f} ms",
        flush=True,
    )
    return {"name": name, "rss_mb": rss, "peak_mb": peak, "series": series, "scrape": scrape}


def run_scale(phases: set[str], campaigns_list: list[int], root: str, log) -> None:
    now = int(time.time() * 1000)
    scrapes, memory = [], []
    if "scrape" in phases:
        print("== /metrics at scale: render time, series, event-loop stalls", flush=True)
        for campaigns in campaigns_list:
            scrapes.append(scrape_phase(campaigns, root, log))
    if "memory" in phases:
        print("== worker memory", flush=True)
        memory.append(
            memory_phase(
                "1,000,000 distinct campaign ids", hostile_batches(1_000_000, now), root, log, {}
            )
        )
        memory.append(
            memory_phase(
                "10,000 campaigns x 1 h of 1-minute buckets",
                hour_batches(10_000, 60, now),
                root,
                log,
                {},
            )
        )
    if scrapes:
        print(
            "\n| campaigns | tracked | series | series/campaign | MB | render p50 | render max | "
            "worst loop stall | RSS |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in scrapes:
            print(
                f"| {r['campaigns']:,} | {r['tracked']:,} | {r['series']:,} | "
                f"{r['series_per_campaign']} | {r['bytes'] / 1e6:.1f} | {r['render_p50'] * 1000:.0f} ms | "
                f"{r['render_max'] * 1000:.0f} ms | {r['stall_max'] * 1000:.0f} ms | {r['rss_mb']:.0f} MB |"
            )
    for m in memory:
        print(
            f"memory: {m['name']}: RSS {m['rss_mb']:.0f} MB (peak {m['peak_mb']:.0f} MB), "
            f"/metrics {m['series']:,} series in {m['scrape'] * 1000:.0f} ms"
        )
