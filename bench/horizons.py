"""Long-horizon state at scale, in-process: memory, restore and fold cost of campaigns with plans
and a month of history.

    python bench/horizons.py [--campaigns 10000] [--days 30] [--partitions 4]

Folds, through the worker's own pipeline (``agents.pipeline.Pipeline``), one event per campaign
and hour for ``--days`` days (the event type rotates, so every hour bucket of every campaign is
filled, as a campaign with traffic every hour), with a plan per campaign, and runs the worker's
expiry after each hour (lead records live for the lead TTL, 7 days). Prints events/s of the fold, the process's RSS, the changelog's
compacted size, and the time to restore every partition from it (``stream.changelog.load``),
which is the floor of a worker's restart with that state.
"""

from __future__ import annotations

import argparse
import gc
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.pipeline import Message, Pipeline, state_config
from stream import changelog
from stream.codec import decode_key
from stream.events import EVENT_TYPES
from stream.plans import validate_plan
from stream.settings import Settings
from stream.state import PartitionState

HOUR, MIN = 3_600_000, 60_000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    now = int(time.time() * 1000)
    now -= now % MIN
    settings = Settings(partitions=args.partitions, max_campaigns_per_partition=args.campaigns)
    topics = settings.topics.inputs()
    pipeline = Pipeline(settings, lambda: now)
    pipeline.assign(range(args.partitions), [])
    campaigns = [f"camp-{i:05d}" for i in range(args.campaigns)]
    partition_of = {c: i % args.partitions for i, c in enumerate(campaigns)}
    offsets = [[0] * (len(topics) + 1) for _ in range(args.partitions)]
    # The changelog goes to a file, as to Kafka: the RSS measured is the state's.
    log = tempfile.TemporaryFile()
    written = [0, 0]  # records, bytes
    folded = 0
    fold_seconds = 0.0

    def write(records) -> None:
        for key, value in records:
            value = value or b""  # a deletion (no live record is empty)
            log.write(struct.pack("<II", len(key), len(value)) + key + value)
            written[0] += 1
            written[1] += len(key) + len(value)

    def fold(messages: list[Message]) -> None:
        nonlocal fold_seconds
        started = time.perf_counter()
        result = pipeline.process(messages)
        fold_seconds += time.perf_counter() - started
        write(result.records)

    print(f"rss at start: {rss_mb():.0f} MB", flush=True)
    plans = []
    for c in campaigns:
        p = partition_of[c]
        plan = {"campaign_id": c, "targets": {"cpa": 40, "ctr": 0.02}, "budget": {"daily": 500}}
        assert not isinstance(validate_plan(plan), str)
        plans.append(
            Message(settings.topics.plans, p, offsets[p][5], orjson.dumps(plan), now, c.encode())
        )
        offsets[p][5] += 1
    fold(plans)
    hours = args.days * 24
    for hour in range(hours, 0, -1):
        at = now - hour * HOUR + 17 * MIN
        by_message: dict[tuple[int, int], list[dict]] = {}
        for i, c in enumerate(campaigns):
            kind = (i + hour) % 5
            event_type = EVENT_TYPES[kind]
            event = {
                "event_id": f"{c}-{hour}",
                "event_type": event_type,
                "occurred_at": at,
                "campaign_id": c,
                "channel": "search",
            }
            if event_type in ("lead", "sales_contact"):
                event["lead_id"] = f"{c}-L{hour}"
            elif event_type == "sale":
                event["value"] = 80.0
            else:
                event["cost"] = 0.5
            by_message.setdefault((partition_of[c], kind), []).append(event)
        messages = []
        for (p, kind), events in by_message.items():
            for start in range(0, len(events), 100):
                body = orjson.dumps(events[start : start + 100])
                messages.append(Message(topics[kind], p, offsets[p][kind], body, now))
                offsets[p][kind] += 1
                folded += len(events[start : start + 100])
        fold(messages)
        # The worker's expiry timer: lead records past the lead TTL (7 days) go, a round at a time.
        write(pipeline.expire())
        if hour % (24 * 5) == 0:
            print(f"  {hours - hour} of {hours} hours folded; rss {rss_mb():.0f} MB", flush=True)
    gc.collect()
    state_rss = rss_mb()
    hour_rows = sum(
        len(c.hours.rows) for st in pipeline.states.values() for c in st.campaigns.values()
    )
    print(
        f"{args.campaigns:,} campaigns with plans, {args.days} days of hourly history "
        f"({folded:,} events): fold {folded / fold_seconds:,.0f} events/s; peak RSS "
        f"{state_rss:,.0f} MB (hour buckets {hour_rows * 8 / 1e6:,.0f} MB of it); changelog "
        f"written {written[0]:,} records, {written[1] / 1e6:,.0f} MB",
        flush=True,
    )
    pipeline.states.clear()
    gc.collect()
    # A restore: each partition's records, compacted (the last value of a key wins), then loaded.
    started = time.perf_counter()
    restored = 0
    for p in range(args.partitions):
        prefix = f"[{p},".encode()
        table: dict[bytes, bytes] = {}
        log.seek(0)
        while header := log.read(8):
            key_len, value_len = struct.unpack("<II", header)
            key, value = log.read(key_len), log.read(value_len)
            if not key.startswith(prefix):
                continue
            if value:
                table[key] = value
            else:
                table.pop(key, None)
        state = PartitionState(p, state_config(settings))
        changelog.load(state, ((decode_key(k), v) for k, v in table.items()))
        restored += len(state.campaigns)
        del table, state
    print(
        f"restore (compact and stream.changelog.load, partition by partition): "
        f"{time.perf_counter() - started:.1f} s for {restored:,} campaigns",
        flush=True,
    )


if __name__ == "__main__":
    main()
