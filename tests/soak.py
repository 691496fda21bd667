"""Crash soak: a stream with late (minutes to 40 days), duplicate, malformed and contact-before-lead
events and campaign plans that change mid-stream (budgets, time zones, removals), workers
SIGKILLed at random points and restarted, a second worker joining and leaving; at the end every
figure must equal the oracle's: all-time counts, the 1h window, today / 7d / 30d in each
campaign's time zone, the plans in force and their budgets' use.

    python -m tests.soak [--events 1000000] [--kills 10] [--joins 2] [--seconds 240] [--seed 1]

Prints each restart's time to catch up (the restarted worker's lag back to 0) and exits 1 on any
difference. ``tests/e2e/test_soak.py`` runs a short form in ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer

from agents.broker import EmbeddedBroker
from agents.topics import ensure_topics
from stream.events import EVENT_TYPES
from stream.exposition import HORIZON_EVENT_TYPES
from stream.horizons import DAY_HORIZONS, horizons
from stream.settings import Settings, Topics
from tests.e2e.harness import WorkerProcess
from tests.scrape import Samples, total

TOPICS = dict(zip(EVENT_TYPES, Topics().inputs()))  # event type -> default topic
APP_ID = "soak"
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
PLANS_TOPIC = Topics().plans
PLANNED = 20  # campaigns camp-000 .. camp-019 get plans
ZONES = ("UTC", "America/New_York", "Asia/Tokyo", "Europe/Berlin")


@dataclass
class Oracle:
    events: dict[tuple[str, str], int] = field(default_factory=dict)  # (campaign, type) -> count
    in_window: dict[str, int] = field(default_factory=dict)  # type -> events in the 1h window
    late: int = 0
    duplicates: int = 0
    malformed: int = 0
    responses: int = 0  # leads with a first contact
    response_sum_ms: int = 0
    # (campaign, type, UTC hour start) -> [events, spend micros]: what the long horizons sum.
    hours: dict[tuple[str, str, int], list[int]] = field(default_factory=dict)
    plans: dict[str, dict | None] = field(default_factory=dict)  # the last plan record of each


def plan_record(rng: random.Random, campaign: str) -> dict:
    return {
        "campaign_id": campaign,
        "targets": {"cpa": float(rng.randrange(10, 90))},
        "budget": {"daily": float(rng.randrange(1, 40))},
        "timezone": rng.choice(ZONES),
        "labels": {"owner": f"owner-{rng.randrange(3)}"},
    }


def traffic(
    events: int, campaigns: int, seed: int
) -> tuple[list[tuple[str, bytes, bytes]], Oracle]:
    """Messages in arrival order, and what they must add up to."""
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    oracle = Oracle()
    messages: list[tuple[str, bytes, bytes]] = []
    leads: list[tuple[str, str, int]] = []  # (campaign, lead id, lead time)
    valid: list[int] = []  # indexes of messages holding an event (resends copy one of these)
    # The join is per campaign: (campaign, lead id) -> time
    first_contact: dict[tuple[str, str], int] = {}
    lead_time: dict[tuple[str, str], int] = {}
    sent = 0
    while sent < events:
        campaign = f"camp-{rng.randrange(campaigns):03d}"
        roll = rng.random()
        kind = (
            "impression"
            if roll < 0.7
            else "click"
            if roll < 0.85
            else "lead"
            if roll < 0.92
            else "sales_contact"
            if roll < 0.97
            else "sale"
        )
        if rng.random() < 0.003:  # a plan set, changed or removed mid-stream
            planned = f"camp-{rng.randrange(PLANNED):03d}"
            plan = None if rng.random() < 0.15 else plan_record(rng, planned)
            messages.append((PLANS_TOPIC, planned.encode(), plan and orjson.dumps(plan)))
            oracle.plans[planned] = plan
        late = rng.random() < 0.01
        roll = rng.random()
        # Leads and contacts stay within the lead TTL (7 days): their join is checked as is.
        days_late = late and kind in ("impression", "click", "sale")
        if days_late and roll < 0.3:  # a late conversion: days old, in 7d / 30d only
            at = now - rng.randrange(DAY, 20 * DAY)
        elif days_late and roll < 0.35:  # older than every horizon: all-time totals only
            at = now - 40 * DAY
        else:
            at = now - (80 * MIN + rng.randrange(10 * MIN) if late else rng.randrange(20 * MIN))
        body: dict = {
            "event_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "event_type": kind,
            "occurred_at": at,
            "campaign_id": campaign,
            "channel": rng.choice(["a", "b"]),
        }
        if kind == "lead":
            lead_id = f"L{len(leads)}"
            body["lead_id"] = lead_id
            leads.append((campaign, lead_id, at))
            lead_time[(campaign, lead_id)] = at
        elif kind == "sales_contact":
            if leads and rng.random() < 0.9:
                campaign, lead_id, _ = rng.choice(leads)
            else:  # a contact before its lead (the lead comes later) or for an unknown lead
                lead_id = f"L{len(leads) + rng.randrange(50)}"
            body["campaign_id"] = campaign
            body["lead_id"] = lead_id
            first_contact[(campaign, lead_id)] = min(first_contact.get((campaign, lead_id), at), at)
        elif kind == "sale":
            body |= {"value": 20.0, "currency": "USD"}
        else:
            body["cost"] = 0.01
        raw = orjson.dumps(body)
        valid.append(len(messages))
        messages.append((TOPICS[kind], body["campaign_id"].encode(), raw))
        key = (body["campaign_id"], kind)
        oracle.events[key] = oracle.events.get(key, 0) + 1
        hour = oracle.hours.setdefault((body["campaign_id"], kind, at - at % HOUR), [0, 0])
        hour[0] += 1
        hour[1] += 10_000 if "cost" in body else 0
        if late:
            oracle.late += 1
        else:
            oracle.in_window[kind] = oracle.in_window.get(kind, 0) + 1
        sent += 1
        if rng.random() < 0.005:  # a producer resend, soon after
            messages.append(messages[valid[-1 - rng.randrange(min(20, len(valid)))]])
            oracle.duplicates += 1
        if rng.random() < 0.002:
            messages.append((TOPICS["click"], b"camp-000", b"{not json"))
            oracle.malformed += 1
    for lead, contact in first_contact.items():
        if lead in lead_time:
            oracle.responses += 1
            oracle.response_sum_ms += max(0, contact - lead_time[lead])
    return messages, oracle


def produce_over(
    bootstrap: str, messages: list, seconds: float, partitions: int
) -> threading.Thread:
    """Send ``messages`` spread over ``seconds``; a plan to every partition (as ``plans load``)."""

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
        )
        await producer.start()
        try:
            start = time.monotonic()
            step = max(1, len(messages) // 200)
            for i in range(0, len(messages), step):
                futures = []
                for t, k, v in messages[i : i + step]:
                    if t == PLANS_TOPIC:
                        for p in range(partitions):
                            futures.append(await producer.send(t, v, key=k, partition=p))
                    else:
                        futures.append(await producer.send(t, v, key=k))
                await asyncio.gather(*futures)
                delay = start + seconds * (i + step) / len(messages) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await producer.stop()

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    return thread


def restored_of(worker: WorkerProcess) -> str:
    """What the restart restored: its live records, and how many the changelog gave."""
    restored = health_of(worker).get("restored")
    if not restored:
        return ""
    read = restored.get("read_from_changelog")
    return f" ({restored['records']:,} records restored, {'all' if read is None else f'{read:,}'} read from the changelog)"


def health_of(worker: WorkerProcess, timeout: float = 2) -> dict:
    try:
        return orjson.loads(worker.get("/health", timeout=timeout))
    except (OSError, ValueError):
        return {}


def caught_up_after(worker: WorkerProcess, since_ms: float, deadline: float) -> float | None:
    """Seconds from ``since_ms`` until the worker, after a hand-over assigned since then, was
    caught up on every partition it owns (its own clock in ``/health``: asking its cheap probe,
    not scraping ``/metrics``, whose rendering would slow the catch-up it measures); None if
    not by ``deadline`` (monotonic)."""
    while time.monotonic() < deadline:
        handover = health_of(worker).get("handover") or {}
        if (handover.get("assigned_at_ms") or 0) >= since_ms and handover.get("caught_up_at_ms"):
            return (handover["caught_up_at_ms"] - since_ms) / 1000
        time.sleep(0.1)
    return None


def phases_of(worker: WorkerProcess, restarted_ms: float, caught: float | None) -> str:
    """Where a restart's time went, from the worker's /health: the process start (Python and
    imports), the topics' check, the local store's check against the changelog, Faust's start
    and the group's assignment, the hand-over (restore), and the catch-up to lag 0."""
    try:
        health = orjson.loads(worker.get("/health"))
        handover, startup = health["handover"], health["startup"]
    except (OSError, KeyError, ValueError):
        return ""
    if handover.get("assigned_at_ms") is None or not startup or caught is None:
        return ""
    assigned = (handover["assigned_at_ms"] - restarted_ms) / 1000
    serving = handover["seconds"]
    process = (startup["began_at_ms"] - restarted_ms) / 1000
    joined = (handover["assigned_at_ms"] - startup["app_created_at_ms"]) / 1000
    return (
        f"; process {process:.1f}s, topics {startup['topics_seconds']:.1f}s, store check "
        f"{startup['store_check_seconds']:.1f}s, Faust start + group {joined:.1f}s, restore "
        f"{serving:.1f}s{handover_parts(handover)}, catch-up {caught - assigned - serving:.1f}s"
        + (
            f"; hand-over {handover['number']} of this process"
            if handover.get("number", 1) > 1
            else ""
        )
    )


def handover_parts(handover: dict) -> str:
    """A hand-over's parts (``/health``): Faust's recovery, then reading, building and freezing
    the state, and how many partitions' states were built before it, while joining."""
    parts = [("recovery", "recovery_seconds"), ("read", "read_seconds")]
    parts += [("build", "build_seconds"), ("freeze", "freeze_seconds")]
    said = [f"{name} {handover[key]:.2f}s" for name, key in parts if key in handover]
    if handover.get("prewarmed_partitions"):  # built while joining the group (agents.prewarm)
        said.append(
            f"{handover['prewarmed_partitions']} partitions built while joining in "
            f"{handover.get('prewarm_seconds', 0):.2f}s with "
            f"{handover.get('prewarm_tail_records', 0):,} records of the changelog's tail"
        )
    return f" ({', '.join(said)})" if said else ""


def final_differences(worker: WorkerProcess, oracle: Oracle) -> list[str]:
    """Once the stream has ended: wait (up to 300 s) until ``worker`` has folded every event of
    the oracle with no lag, then what its figures say otherwise than the oracle's."""
    expected = sum(oracle.events.values())
    deadline = time.monotonic() + 300
    while True:
        got = worker.try_metrics()
        if lag_zero(got) and total(got, "kpi_events_total") == expected:
            break
        if time.monotonic() > deadline:
            print(
                f"not caught up 300 s after the stream ended: "
                f"{total(got, 'kpi_events_total'):g} of {expected} events",
                flush=True,
            )
            break
        time.sleep(0.5)
    for _ in range(2):  # again if a campaign's day ended while scraping
        before = int(time.time() * 1000)
        scraped = worker.metrics()
        after = int(time.time() * 1000)
        if before // HOUR == after // HOUR:
            break
    return compare([scraped], oracle, after)


def lag_zero(metrics: Samples) -> bool:
    lag = [v for (n, _), v in metrics.items() if n == "kpi_consumer_lag_messages"]
    return bool(lag) and not any(lag)


def compare(samples: list[Samples], oracle: Oracle, now_ms: int) -> list[str]:
    def t(name: str, **labels: str) -> float:
        return sum(total(s, name, **labels) for s in samples)

    problems = []
    for (campaign, kind), count in sorted(oracle.events.items()):
        got = t("kpi_events_total", campaign=campaign, event_type=kind)
        if got != count:
            problems.append(f"kpi_events_total{{{campaign},{kind}}} = {got:g}, expected {count}")
    for kind, count in sorted(oracle.in_window.items()):
        got = t("kpi_window_events", event_type=kind, window="1h")
        if got != count:
            problems.append(f"kpi_window_events{{{kind},1h}} = {got:g}, expected {count}")
    checks = [
        ("kpi_events_late_total", {}, oracle.late),
        ("kpi_events_duplicate_total", {}, oracle.duplicates),
        ("kpi_events_rejected_total", {"reason": "invalid_json"}, oracle.malformed),
        ("kpi_sales_response_seconds_count", {}, oracle.responses),
    ]
    for name, labels, expected in checks:
        got = sum(total(s, name, **labels) for s in samples)
        if got != expected:
            problems.append(f"{name}{labels or ''} = {got:g}, expected {expected}")
    response_sum = t("kpi_sales_response_seconds_sum")
    if round(response_sum * 1000) != oracle.response_sum_ms:
        problems.append(
            f"response sum {response_sum * 1000:.0f} ms, expected {oracle.response_sum_ms}"
        )
    return problems + compare_plans_and_horizons(samples, oracle, now_ms)


def compare_plans_and_horizons(samples: list[Samples], oracle: Oracle, now_ms: int) -> list[str]:
    """today / 7d / 30d per campaign in its plan's zone (UTC without), the plans in force and
    the daily budget's use, against the oracle at the scrape's clock ``now_ms``."""

    def t(name: str, **labels: str) -> float:
        return sum(total(s, name, **labels) for s in samples)

    def present(name: str, **labels: str) -> bool:
        return any(
            n == name and all(dict(ls).get(k) == v for k, v in labels.items())
            for s in samples
            for (n, ls) in s
        )

    problems = []
    campaigns = sorted({c for c, _ in oracle.events})
    by_campaign: dict[tuple[str, str], dict[int, list[int]]] = {}
    for (c, k, hour), sums in oracle.hours.items():
        by_campaign.setdefault((c, k), {})[hour] = sums
    for campaign in campaigns:
        plan = oracle.plans.get(campaign)
        zone = plan["timezone"] if plan else "UTC"
        spans = horizons(now_ms, zone, HOUR).spans
        spend_today = 0
        for label in DAY_HORIZONS:
            span = spans[label]
            spend = 0
            for kind in HORIZON_EVENT_TYPES:
                count = 0
                for hour, (n, micros) in by_campaign.get((campaign, kind), {}).items():
                    if span.first <= hour <= span.last:
                        count += n
                        spend += micros
                got = t("kpi_window_events", campaign=campaign, event_type=kind, window=label)
                if got != count:
                    problems.append(
                        f"kpi_window_events{{{campaign},{kind},{label}}} = {got:g}, "
                        f"expected {count} ({zone})"
                    )
            got = t("kpi_window_spend", campaign=campaign, window=label)
            if round(got * 1_000_000) != spend:
                problems.append(
                    f"kpi_window_spend{{{campaign},{label}}} = {got}, expected {spend / 1e6}"
                )
            if label == "today":
                spend_today = spend
        if plan is None:
            if present("kpi_plan_budget", campaign=campaign):
                problems.append(f"{campaign}: a removed plan's budget is still exported")
            continue
        budget = plan["budget"]["daily"]
        checks = [
            ("kpi_plan_budget", {"period": "daily"}, budget),
            ("kpi_plan_target", {"kpi": "cpa"}, plan["targets"]["cpa"]),
            ("kpi_budget_used_ratio", {"period": "daily"}, spend_today / 1e6 / budget),
        ]
        for name, labels, expected in checks:
            got = t(name, campaign=campaign, **labels)
            if abs(got - expected) > 1e-9 * max(1.0, abs(expected)):
                problems.append(f"{name}{{{campaign},{labels}}} = {got}, expected {expected}")
        if not present("kpi_plan_info", campaign=campaign, timezone=zone):
            problems.append(f"{campaign}: kpi_plan_info has not its zone {zone}")
    return problems


def soak(
    events: int,
    kills: int,
    joins: int,
    seconds: float,
    seed: int,
    campaigns: int = 200,
    log_dir: str | None = None,
) -> int:
    rng = random.Random(seed)
    messages, oracle = traffic(events, campaigns, seed)
    log_dir = log_dir or tempfile.mkdtemp(prefix="kpi-soak-")
    print(
        f"soak: {events:,} events in {len(messages):,} messages over {seconds:.0f}s, "
        f"{kills} SIGKILLs, {joins} join/leave; logs in {log_dir}",
        flush=True,
    )
    # Only the 1h-window figure is compared against all timely events: keep the run well inside it.
    env = {"KPI_DECISIONS": "off"}
    started: list[WorkerProcess] = []

    def worker(data_dir: str = "", instance: str = "") -> WorkerProcess:
        slot = {**env, "KPI_INSTANCE_ID": instance} if instance else env
        process = WorkerProcess(
            broker.url, APP_ID, f"{log_dir}/worker-{len(started)}.log", env=slot, data_dir=data_dir
        ).start()
        started.append(process)
        return process

    with EmbeddedBroker() as broker:
        partitions = asyncio.run(ensure_topics(Settings(broker=broker.url)))
        producer = produce_over(broker.bootstrap, messages, seconds, partitions)
        # The restarted worker is the same host: its data dir (the local store's file) stays.
        main_data = f"{log_dir}/main-data"
        # ... and its place in the group (static membership): no wait for the dead one's session.
        main = worker(main_data, "main")
        actions = sorted(
            [(rng.uniform(0.05, 0.95) * seconds, "kill") for _ in range(kills)]
            + [(rng.uniform(0.1, 0.8) * seconds, "join") for _ in range(joins)]
        )
        t0 = time.monotonic()
        catch_up: list[float | None] = []
        try:
            for at, action in actions:
                time.sleep(max(0.0, t0 + at - time.monotonic()))
                if action == "kill":
                    # Killed while the group rebalances (owning nothing), a restart starts with
                    # more backlog: said beside its time.
                    owned_before = health_of(main).get("partitions")
                    main.kill()
                    restarted_at = time.monotonic()
                    restarted_ms = time.time() * 1000
                    main = worker(main_data, "main")
                    caught = caught_up_after(main, restarted_ms, restarted_at + 120)
                    catch_up.append(caught)
                    restored = restored_of(main)
                    print(
                        f"  t={time.monotonic() - t0:6.1f}s SIGKILL + restart: caught up in "
                        f"{f'{caught:.1f}s' if caught is not None else '>120s'}"
                        f"{restored}{phases_of(main, restarted_ms, caught)}"
                        + (
                            "; killed mid-rebalance (owning no partition)"
                            if owned_before == []
                            else ""
                        ),
                        flush=True,
                    )
                else:
                    extra = worker()
                    time.sleep(min(20.0, seconds / 10))
                    extra.stop()
                    print(
                        f"  t={time.monotonic() - t0:6.1f}s a second worker joined and left",
                        flush=True,
                    )
            producer.join()
            problems = final_differences(main, oracle)
        finally:
            for process in started:
                process.stop()
    done = [c for c in catch_up if c is not None]
    print(
        f"restart -> caught up: {', '.join(f'{c:.1f}s' for c in done) or '-'}"
        f"{f'; {len(catch_up) - len(done)} not within 120s' if len(done) < len(catch_up) else ''}"
    )
    if problems:
        print("NOT EXACT:\n  " + "\n  ".join(problems[:20]))
        return 1
    print(
        f"exact: {sum(oracle.events.values()):,} events, {oracle.late} late, "
        f"{oracle.duplicates} duplicates, {oracle.malformed} rejected, {oracle.responses} "
        f"responses; today / 7d / 30d and {sum(p is not None for p in oracle.plans.values())} "
        f"plans in force ({len(oracle.plans)} campaigns planned) as the oracle's"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--joins", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    return soak(args.events, args.kills, args.joins, args.seconds, args.seed)


if __name__ == "__main__":
    sys.exit(main())
