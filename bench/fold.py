"""The fold alone, in process: ``Pipeline.process`` over 200,000 click events at 100 per
message, spread over 1,000 campaigns in 4 partitions; prints the best of three runs in events per
CPU second.

For a before/after on one machine, run it alternately against two checkouts, e.g.

    git worktree add /tmp/before 952ca45
    for i in 1 2 3 4 5 6; do
        (cd /tmp/before && PYTHONPATH=/tmp/before python /path/to/bench/fold.py before)
        python bench/fold.py after
    done

and compare medians: single runs on a shared VM vary by 2x.
"""

from __future__ import annotations

import sys
import time

import orjson

from agents.pipeline import Message, Pipeline
from stream.settings import Settings

NOW_MS = 1_790_000_040_000


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "fold"
    settings = Settings()
    messages = []
    for m in range(2000):
        body = [
            {
                "event_id": f"e{m}-{i}",
                "event_type": "click",
                "occurred_at": NOW_MS - i,
                "campaign_id": f"camp-{(m * 7 + i) % 1000}",
                "channel": "search",
                "cost": 0.45,
            }
            for i in range(100)
        ]
        messages.append(Message(settings.topics.clicks, m % 4, m // 4, orjson.dumps(body), NOW_MS))
    best = 0.0
    for _ in range(3):
        pipeline = Pipeline(settings, lambda: NOW_MS)
        pipeline.assign(range(4), [])
        # CPU time, not wall time: a shared VM's stolen time would otherwise dominate an A/B.
        started = time.process_time()
        for i in range(0, len(messages), 1000):
            pipeline.process(messages[i : i + 1000])
        best = max(best, 200_000 / (time.process_time() - started))
    print(f"{label}: {best:,.0f} events/s")


if __name__ == "__main__":
    main()
