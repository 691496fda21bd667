"""Quix Streams baseline: a tumbling 1-minute count per campaign over the preloaded topic.

What a user would write instead of kpi-monitor for the simplest KPI (events per campaign and
minute), run on the same broker and machine. Prints ``PROGRESS <events> <monotonic seconds>``
whenever another 5% of ``--expect`` events has been counted, then exits.

The embedded broker does not report a topic's ``retention.ms`` and Quix refuses a topic without
it (``KeyError: 'retention.ms'``), so it is set first with IncrementalAlterConfigs (the legacy
AlterConfigs call is refused there).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta


def set_retention(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True, help="events (not messages)")
    args = parser.parse_args()

    from quixstreams import Application

    set_retention(args.bootstrap, args.topic)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"bench-quix-{time.time_ns()}",
        auto_offset_reset="earliest",
        state_dir=tempfile.mkdtemp(prefix="bench-quix-"),
        consumer_extra_config={"session.timeout.ms": 6000},
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
    step = max(1, args.expect // 20)
    seen = [0]

    def progress(_value: dict) -> None:
        seen[0] += 1
        if seen[0] % step == 0 or seen[0] == args.expect:
            print(f"PROGRESS {seen[0]} {time.monotonic()}", flush=True)
        if seen[0] >= args.expect:
            app.stop()

    sdf = app.dataframe(topic)
    sdf = sdf.apply(lambda value: value if isinstance(value, list) else [value], expand=True)
    sdf = sdf.update(progress)
    sdf = sdf.tumbling_window(timedelta(minutes=1), grace_ms=timedelta(minutes=1)).count().current()
    app.run(sdf)


if __name__ == "__main__":
    main()
