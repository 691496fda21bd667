"""Create the input, plan, decision and dead-letter topics, and check that the inputs (and the
plans and decisions) are co-partitioned."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.settings import Settings

from .kafka_auth import aiokafka_kwargs


class TopicLayoutError(RuntimeError):
    """Input topics are not co-partitioned; the worker must not start."""


def bootstrap_servers(broker_url: str) -> str:
    return ",".join(part.removeprefix("kafka://") for part in broker_url.split(";"))


async def partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(topics)
    counts = {}
    for topic in described:
        if topic.get("error_code", 0) == 0 and topic.get("partitions"):
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def ensure_topics(settings: Settings) -> int:
    """Create missing topics; return the input partition count, or raise TopicLayoutError."""
    inputs = list(settings.topics.inputs())
    # The decisions topic is co-partitioned too: a campaign's decisions have one writer, the
    # worker that owns the campaign's input partition.
    # Plans too: a campaign's plan is folded beside its events.
    copartitioned = [
        *inputs,
        settings.topics.plans,
        *([settings.topics.decisions] if settings.decisions else []),
    ]
    compacted = (settings.topics.rejected, settings.topics.plans)
    wanted = [*copartitioned, settings.topics.rejected]
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.broker or ""), **aiokafka_kwargs(settings)
    )
    await admin.start()
    try:
        existing = await partition_counts(admin, wanted)
        input_counts = {t: existing[t] for t in inputs if t in existing}
        partitions = min(input_counts.values()) if input_counts else settings.partitions
        missing = [t for t in wanted if t not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        t,
                        num_partitions=partitions,
                        replication_factor=1,
                        # Dead letters are keyed by their source, plans by their campaign:
                        # compaction keeps one per key.
                        topic_configs={"cleanup.policy": "compact"} if t in compacted else {},
                    )
                    for t in missing
                ]
            )
            existing.update(await partition_counts(admin, missing))
    finally:
        await admin.close()
    counts = {t: existing.get(t) for t in copartitioned}
    check_copartitioned(counts)
    count = counts[inputs[0]]
    assert count is not None  # check_copartitioned refused a missing topic
    return count


def check_copartitioned(counts: dict[str, int | None]) -> None:
    if len(set(counts.values())) != 1 or None in counts.values():
        layout = ", ".join(f"{t}={n}" for t, n in counts.items())
        raise TopicLayoutError(
            "input topics, the plans topic and the decisions topic must have the same partition "
            "count (a campaign's events of every type, its plan and its decisions must land in "
            "the same partition "
            f"number); found {layout}. Recreate or expand the "
            "topics so that the counts match."
        )
