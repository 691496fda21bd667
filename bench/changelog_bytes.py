"""Changelog bytes written per 1,000,000 events: the records the workers' fold writes (key and value
bytes), by record type, and how many of them rewrite a key with the value it already had.

    python bench/changelog_bytes.py [--events 1000000] [--campaigns 5000] [--batch 200]

The stream is ``bench/backtest.py``'s (all five event types, 100 per message, an hour of event
time, keyed by campaign); it is folded in process by ``Pipeline.process`` in batches of
``--batch`` messages, as a worker folds each fetch. Nothing is sent to Kafka: the figure is what a
worker hands its changelog producer.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.pipeline import Pipeline
from bench.backtest import messages
from stream.codec import decode_key
from stream.settings import Settings

MIN = 60_000
NAMES = {
    "b": "minute bucket",
    "h": "hour bucket",
    "t": "totals",
    "l": "lead",
    "d": "dedup chunk",
    "m": "meta",
    "p": "plan",
    "a": "autopause",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=5_000)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--batch", type=int, default=200, help="messages per fold (a fetch)")
    args = parser.parse_args()
    end_ms = (int(time.time() * 1000) // MIN) * MIN
    stream = messages(args.events, args.campaigns, args.minutes, end_ms)
    settings = Settings()
    clock = {"now": 0}
    pipeline = Pipeline(settings, lambda: clock["now"])
    pipeline.assign(range(settings.partitions), [])
    records: Counter = Counter()
    size: Counter = Counter()
    unchanged: Counter = Counter()
    deletes = 0
    last: dict[bytes, bytes] = {}
    started = time.perf_counter()
    for i in range(0, len(stream), args.batch):
        batch = stream[i : i + args.batch]
        clock["now"] = batch[-1].timestamp or 0
        for key, value in pipeline.process(batch).records:
            kind = decode_key(key)[1]
            records[kind] += 1
            size[kind] += len(key) + len(value or b"")
            if value is None:
                deletes += 1
                last.pop(key, None)
                continue
            if last.get(key) == value:
                unchanged[kind] += 1
            last[key] = value
    seconds = time.perf_counter() - started
    scale = 1_000_000 / args.events
    total = sum(size.values())
    print(
        f"== changelog written for {args.events:,} events of {args.campaigns:,} campaigns, "
        f"{args.batch} messages per fold ({seconds:.0f}s)"
    )
    print(
        f"  per 1,000,000 events: {sum(records.values()) * scale:,.0f} records, "
        f"{total * scale / 1e6:,.1f} MB, {sum(unchanged.values()) * scale:,.0f} rewrites of an "
        f"unchanged value, {deletes * scale:,.0f} deletions"
    )
    for kind, count in records.most_common():
        print(
            f"  {NAMES.get(kind, kind):<14} {count * scale:>10,.0f} records "
            f"{size[kind] * scale / 1e6:>8,.1f} MB  unchanged {unchanged[kind] * scale:>8,.0f}"
        )


if __name__ == "__main__":
    main()
