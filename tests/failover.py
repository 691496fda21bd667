"""Failover: two workers share the partitions (each keeps a standby of the other's state in its
local store); mid-stream one is SIGKILLed and not restarted, and the survivor takes its
partitions. At the end every figure must equal the oracle's, as in the soak.

    python -m tests.failover [--events 1000000] [--seconds 300] [--kill-at 0.6] [--seed 1]

Prints the takeover's clock: the kill to the group's rebalance (the dead member's session
timeout), the rebalance to serving the taken partitions' restored state (the survivor's
``/health`` hand-over), and the rebalance to serving them caught up (lag 0 on every partition:
exact figures in ``/metrics``), with what the hand-over restored and read from the changelog, and
to the survivor's first decision round over every partition (with its untrusted judgements).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time

from agents.broker import EmbeddedBroker
from agents.topics import ensure_topics
from stream.settings import Settings
from tests.e2e.harness import WorkerProcess
from tests.soak import (
    APP_ID,
    final_differences,
    handover_parts,
    health_of,
    produce_over,
    traffic,
)


def failover(
    events: int,
    seconds: float,
    kill_at: float,
    seed: int,
    campaigns: int = 200,
    log_dir: str | None = None,
) -> int:
    messages, oracle = traffic(events, campaigns, seed)
    log_dir = log_dir or tempfile.mkdtemp(prefix="kpi-failover-")
    print(
        f"failover: {events:,} events in {len(messages):,} messages over {seconds:.0f}s, "
        f"one of two workers SIGKILLed at {kill_at:.0%} of it; logs in {log_dir}",
        flush=True,
    )
    env = {"KPI_DECISIONS": "on"}  # the survivor judges the taken campaigns (the shipped rules)
    with EmbeddedBroker() as broker:
        partitions = asyncio.run(ensure_topics(Settings(broker=broker.url)))
        workers = {
            name: WorkerProcess(
                broker.url,
                APP_ID,
                f"{log_dir}/{name}.log",
                env={**env, "KPI_INSTANCE_ID": name},
                data_dir=f"{log_dir}/{name}-data",
            ).start()
            for name in ("a", "b")
        }
        a, b = workers["a"], workers["b"]
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # both own their share before the stream
                owned = [health_of(w).get("partitions") or [] for w in (a, b)]
                if all(owned) and sum(map(len, owned)) == partitions:
                    break
                time.sleep(0.5)
            else:
                print("the two workers did not share the partitions within 120 s")
                return 1
            taken = health_of(a)["partitions"]
            producer = produce_over(broker.bootstrap, messages, seconds, partitions)
            time.sleep(kill_at * seconds)
            before = (health_of(b).get("handover") or {}).get("assigned_at_ms")
            a.kill()
            killed_ms = time.time() * 1000
            print(f"  SIGKILLed worker a (partitions {taken}); b takes them", flush=True)
            handover: dict = {}
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                seen = health_of(b)
                handover = seen.get("handover") or {}
                if (
                    handover.get("assigned_at_ms") != before
                    and len(seen.get("partitions") or []) == partitions
                ):
                    break
                time.sleep(0.1)
            else:
                print("  b did not serve every partition within 120 s of the kill")
                return 1
            drain = []  # (seconds after the rebalance, messages behind) until caught up
            while time.monotonic() < deadline:
                seen = health_of(b)
                handover = seen.get("handover") or handover
                behind = sum((seen.get("lag") or {}).values())
                drain.append((time.time() - handover["assigned_at_ms"] / 1000, behind))
                if handover.get("caught_up_at_ms"):
                    break
                time.sleep(0.1)
            else:
                print("  b was not caught up within 120 s of the kill")
                return 1
            caught_ms = handover["caught_up_at_ms"]
            judged: dict = {}  # the survivor's first decision round over every partition
            while time.monotonic() < deadline + 30:
                judged = health_of(b).get("decision_round") or {}
                if (
                    judged.get("at_ms", 0) > handover["assigned_at_ms"]
                    and len(judged.get("partitions", [])) == partitions
                ):
                    break
                time.sleep(0.1)
            restored = seen.get("restored") or {}
            assigned = handover["assigned_at_ms"]
            print(
                f"  kill -> rebalance {(assigned - killed_ms) / 1000:.1f}s; rebalance -> "
                f"serving {handover['seconds']:.2f}s ({restored.get('records', 0):,} records "
                f"restored, {restored.get('read_from_changelog')} read from the changelog); "
                f"rebalance -> caught up {(caught_ms - assigned) / 1000:.2f}s; hand-over"
                f"{handover_parts(handover)}",
                flush=True,
            )
            if judged.get("at_ms"):
                print(
                    f"  rebalance -> the first decision round over every partition "
                    f"{(judged['at_ms'] - assigned) / 1000:.2f}s, {judged['unknown']} judgements "
                    "unknown (not trusted)",
                    flush=True,
                )
            print(
                "  lag after the rebalance: "
                + ", ".join(f"{t:.1f}s {n:,}" for t, n in drain[:: max(1, len(drain) // 12)]),
                flush=True,
            )
            producer.join()
            problems = final_differences(b, oracle)
        finally:
            for worker in workers.values():
                worker.stop()
    if problems:
        print("NOT EXACT:\n  " + "\n  ".join(problems[:20]))
        return 1
    print(f"exact: {sum(oracle.events.values()):,} events on the survivor, as the oracle's")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--kill-at", type=float, default=0.6, help="share of the stream")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    return failover(args.events, args.seconds, args.kill_at, args.seed)


if __name__ == "__main__":
    sys.exit(main())
