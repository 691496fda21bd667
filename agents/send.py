"""Publish events from a JSON-lines file, each to its type's topic, keyed by campaign_id."""

from __future__ import annotations

import sys

import orjson
from aiokafka import AIOKafkaProducer

from stream.events import EVENT_TYPES
from stream.settings import Settings

from .kafka_auth import aiokafka_kwargs
from .topics import bootstrap_servers, ensure_topics


def route(obj: object, topics: tuple[str, ...]) -> tuple[str, bytes] | None:
    """(topic, key) for an event object or a batch (routed by its first element), else None."""
    first = obj[0] if isinstance(obj, list) and obj else obj
    if not isinstance(first, dict) or first.get("event_type") not in EVENT_TYPES:
        return None
    topic = topics[EVENT_TYPES.index(first["event_type"])]
    return topic, str(first.get("campaign_id", "")).encode()


async def send_file(settings: Settings, path: str) -> int:
    if settings.broker is None:
        print(
            "kpi-monitor send: set KPI_BROKER or --broker (see `kpi-monitor broker`)",
            file=sys.stderr,
        )
        return 2
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.broker),
        acks="all",
        linger_ms=5,
        **aiokafka_kwargs(settings),
    )
    await producer.start()
    sent = skipped = 0
    try:
        with open(path, "rb") as lines:  # noqa: ASYNC230 (a CLI command: nothing else runs)
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    target = route(orjson.loads(line), settings.topics.inputs())
                except orjson.JSONDecodeError:
                    target = None
                if target is None:
                    print(
                        f"{path}:{number}: no valid event_type to route by; not sent",
                        file=sys.stderr,
                    )
                    skipped += 1
                    continue
                topic, key = target
                await producer.send(topic, line.rstrip(b"\r\n"), key=key)
                sent += 1
                if sent % 10000 == 0:
                    print(f"sent {sent} messages", file=sys.stderr)
        await producer.flush()
    finally:
        await producer.stop()
    print(f"sent {sent} messages, skipped {skipped}")
    return 0 if skipped == 0 else 1
