"""``kpi-monitor plans load | show | remove``: campaign plans onto the compacted plans topic, and
back.

``load`` reads a CSV, JSON-lines or YAML file (``stream.plan_files``), names every bad row with
its line and reason, and publishes the good ones, keyed by campaign_id (a channel default by its
own key), to every partition: each partition folds its own copy, so a campaign's plan is where
its events are whatever partitioner their producers use (Java's murmur2, librdkafka's CRC32), and
a channel default reaches every campaign of the channel. ``show`` reads the topic to its end and
prints the plans in force, validated as the workers validate them. ``remove`` publishes a
tombstone to every partition.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.plan_files import FileRefused, format_of, read_plans
from stream.plans import Plan, channel_key, plan_key, validate_plan
from stream.settings import Settings

from .kafka_auth import aiokafka_kwargs
from .topics import bootstrap_servers, ensure_topics


async def load(
    settings: Settings,
    path: str,
    *,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """0 when every row was good and published, 1 when some were refused (the good ones are
    published all the same), 2 when the file could not be read at all."""
    try:
        text = Path(path).read_text(encoding="utf-8")  # noqa: ASYNC240 (a CLI command: nothing else runs)
        read = read_plans(text, format_of(path))
    except (FileRefused, OSError, UnicodeDecodeError) as exc:
        print(f"kpi-monitor plans load: {path}: {exc}", file=err)
        return 2
    for error in read.errors:
        print(f"{path}:{error.line}: {error.reason}", file=err)
    plans = [plan for _, plan in read.plans]
    campaigns = sum(plan.campaign is not None for plan in plans)
    summary = (
        f"{campaigns} campaign plans and {len(plans) - campaigns} channel defaults; "
        f"{len(read.errors)} rows refused"
    )
    if dry_run:
        print(f"checked {path}: {summary} (nothing published: --dry-run)", file=out)
        return 1 if read.errors else 0
    if settings.broker is None:
        print("kpi-monitor plans load: set KPI_BROKER or --broker", file=err)
        return 2
    await ensure_topics(settings)
    await publish(settings, plans)
    print(f"published {path}: {summary}", file=out)
    return 1 if read.errors else 0


async def publish(settings: Settings, plans: Iterable[Plan]) -> None:
    producer = _producer(settings)
    await producer.start()
    try:
        topic = settings.topics.plans
        partitions = sorted(await producer.partitions_for(topic))
        for plan in plans:
            value = orjson.dumps(plan.to_json())
            key = plan_key(plan)
            for partition in partitions:
                await producer.send(topic, value, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def remove(
    settings: Settings, campaign: str | None, channel: str | None, out: TextIO = sys.stdout
) -> int:
    """A tombstone for a campaign's plan (or a channel's default, in every partition)."""
    if settings.broker is None:
        print("kpi-monitor plans remove: set KPI_BROKER or --broker", file=sys.stderr)
        return 2
    await ensure_topics(settings)
    key = (campaign if campaign is not None else channel_key(channel or "")).encode()
    producer = _producer(settings)
    await producer.start()
    try:
        topic = settings.topics.plans
        for partition in sorted(await producer.partitions_for(topic)):
            await producer.send(topic, None, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    print(f"removed the plan of {campaign or 'channel ' + str(channel)}", file=out)
    return 0


async def in_force(settings: Settings, timeout: float = 15.0) -> dict[bytes, Plan | str]:
    """The plans topic read to its end: by key, the plan in force, or why its latest record is
    refused (tombstoned keys are gone)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        group_id=None,
        enable_auto_commit=False,
        **aiokafka_kwargs(settings),
    )
    await consumer.start()
    latest: dict[bytes, Plan | str] = {}
    try:
        partitions = consumer.partitions_for_topic(settings.topics.plans) or set()
        tps = [TopicPartition(settings.topics.plans, p) for p in sorted(partitions)]
        if not tps:
            return {}
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + timeout
        # The high watermark of the fetch responses, not ListOffsets: the embedded broker
        # answers ListOffsets short (shared notes).
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    key = record.key or b""
                    if record.value is None:
                        latest.pop(key, None)
                        continue
                    try:
                        latest[key] = validate_plan(orjson.loads(record.value))
                    except orjson.JSONDecodeError as exc:
                        latest[key] = f"not JSON: {exc}"
            if await _at_end(consumer, tps):
                break
    finally:
        await consumer.stop()
    return latest


async def _at_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        mark = consumer.highwater(tp)
        if mark is None or await consumer.position(tp) < mark:
            return False
    return True


async def show(
    settings: Settings, campaign: str | None, *, as_json: bool = False, out: TextIO = sys.stdout
) -> int:
    if settings.broker is None:
        print("kpi-monitor plans show: set KPI_BROKER or --broker", file=sys.stderr)
        return 2
    plans = await in_force(settings)
    chosen = sorted(plans.items())
    if campaign is not None:
        chosen = [(k, v) for k, v in chosen if k == campaign.encode()]
        if not chosen:
            print(f"{campaign}: no plan of its own (its channel's default applies)", file=out)
            return 1
    for key, plan in chosen:
        name = key.decode(errors="replace").replace("\x00", "")
        if isinstance(plan, str):
            print(f"{name}: refused ({plan})", file=out)
        elif as_json:
            print(orjson.dumps(plan.to_json()).decode(), file=out)
        else:
            print(describe(plan), file=out)
    return 0


def describe(plan: Plan) -> str:
    """One line a marketer reads: whose plan, targets, budgets, flight, zone, labels."""
    parts = [plan.campaign if plan.campaign is not None else f"channel:{plan.channel} (default)"]
    parts += [f"{kpi}={value:g}" for kpi, value in sorted(plan.targets.items())]
    parts += [f"{period} budget={value:g}" for period, value in sorted(plan.budgets.items())]
    if plan.flight_start or plan.flight_end:
        parts.append(f"flight {plan.flight_start or '...'} to {plan.flight_end or '...'}")
    if plan.timezone:
        parts.append(plan.timezone)
    parts += [f"{name}={value}" for name, value in sorted(plan.labels.items())]
    return "  ".join(parts)


def _producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        acks="all",
        linger_ms=5,
        **aiokafka_kwargs(settings),
    )
