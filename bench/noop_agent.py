"""A Faust agent that iterates the stream and does nothing: Faust's own per-message cost.

Prints ``PROGRESS <messages> <monotonic seconds>`` whenever another 5% of ``--expect`` is reached.
"""

from __future__ import annotations

import argparse
import sys
import time

import faust

from agents.worker import QuietWorker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = faust.App(
        f"bench-noop-{time.time_ns()}",
        broker=args.broker,
        store="memory://",
        web_bind="127.0.0.1",
        web_port=args.port,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        datadir=f"/tmp/bench-noop-{args.port}",
    )
    topic = app.topic(
        *args.topic.split(","),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    step = max(1, args.expect // 20)

    @app.agent(topic)
    async def noop(stream):
        seen = 0
        async for _ in stream:
            seen += 1
            if seen % step == 0 or seen == args.expect:
                print(f"PROGRESS {seen} {time.monotonic()}", flush=True)

    sys.argv = [sys.argv[0]]
    QuietWorker(
        app, loglevel="warning", quiet=True, redirect_stdouts=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
