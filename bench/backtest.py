"""``kpi-monitor backtest`` speed and memory: 1,000,000 events of 5,000 planned campaigns (all five
event types, 100 per message, an hour of event time) judged by the shipped rules.

    python bench/backtest.py [--events 1000000] [--campaigns 5000] [--minutes 60]

Phases, each in its own process (its peak RSS is its own), on the same messages:
1. fold: the workers' fold alone (``Pipeline.process``), the baseline of this run;
2. replay: ``agents.backtest`` in process: the fold and a decision round per minute of event time;
3. cli: the whole command on the embedded broker: offsets for times, the timestamp-ordered merge of
   the partitions, the replay and the report (the messages are produced first, not timed);
4. floor (not in the default phases): the CPU time of the work every replay must do per event
   before any bucket or decision, the workers' own decoding, validation and dedup, each alone:
   the speed no replay of these events can pass on one core.
Speeds are printed as events/s and as a ratio to the fold of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.pipeline import Message
from stream.events import EVENT_TYPES
from stream.settings import Settings

MIN = 60_000
# Shares of the events by type: what an ad funnel looks like.
MIX = (
    ("impression", 0.80),
    ("click", 0.14),
    ("lead", 0.03),
    ("sale", 0.02),
    ("sales_contact", 0.01),
)


def funnel_event(
    event_id: str, kind: str, occurred_at: int, campaign: str, channel: str, lead: int
) -> dict:
    """One event of the funnel: a cost on impressions and clicks, a lead id on leads, contacts
    and sales (one of the campaign's leads), a value on sales."""
    event: dict = {
        "event_id": event_id,
        "event_type": kind,
        "occurred_at": occurred_at,
        "campaign_id": campaign,
        "channel": channel,
    }
    if kind in ("impression", "click"):
        event["cost"] = 0.002 if kind == "impression" else 0.4
    if kind in ("lead", "sales_contact", "sale"):
        event["lead_id"] = f"lead-{campaign}-{lead}"
    if kind == "sale":
        event["value"] = 40.0
        event["currency"] = "USD"
    return event


def messages(events: int, campaigns: int, minutes: int, end_ms: int) -> list[Message]:
    settings = Settings()
    topics = dict(zip(EVENT_TYPES, settings.topics.inputs()))
    rng = random.Random(7)
    per_message = 100
    count = events // per_message
    start = end_ms - minutes * MIN
    out = []
    offsets: dict[tuple[str, int], int] = {}
    kinds = [t for t, _ in MIX]
    weights = [w for _, w in MIX]
    for m in range(count):
        event_type = rng.choices(kinds, weights)[0]
        at = start + (m * minutes * MIN) // count
        campaign = rng.randrange(campaigns)
        body = []
        # Keyed by campaign, as producers do: a message is a batch of one campaign's events.
        c = f"camp-{campaign:05d}"
        channel = "search" if campaign % 3 else "display"
        for i in range(per_message):
            occurred = at - rng.randrange(5_000)
            body.append(funnel_event(f"{m}-{i}", event_type, occurred, c, channel, (m + i) % 50))
        topic = topics[event_type]
        partition = campaign % settings.partitions
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        out.append(Message(topic, partition, offset, orjson.dumps(body), at, None))
    return out


def plans_csv(campaigns: int) -> str:
    lines = ["campaign_id,target_cpa,target_ctr,daily_budget,timezone,owner"]
    for c in range(campaigns):
        ctr = 0.03 if c % 3 else 0.004
        lines.append(f"camp-{c:05d},40,{ctr},500,Europe/Berlin,owner-{c % 20}")
    return "\n".join(lines) + "\n"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor(settings: Settings, stream: list[Message], now_ms: int) -> dict:
    from agents.pipeline import validation_rules
    from stream.dedup import DedupIndex
    from stream.events import Parsed, parse_message, validate_elements

    rules = validation_rules(settings)
    kinds = {topic: kind for kind, topic in enumerate(settings.topics.inputs())}
    index = DedupIndex(settings.dedup_horizon_seconds * 1000)
    clock = time.process_time
    decode = validate = dedup = 0.0
    pos = 0
    for m in stream:  # message by message, as the fold goes: the parts' costs timed apart
        started = clock()
        parsed = parse_message(m.value or b"", rules)
        decoded = clock()
        assert isinstance(parsed, Parsed)
        valid: list = []
        validate_elements(parsed, 0, len(parsed.items), kinds[m.topic], now_ms, rules, valid, [])
        validated = clock()
        for event in valid:
            index.is_duplicate(event.event_id, pos, now_ms)
            pos += 1
        done = clock()
        decode += decoded - started
        validate += validated - decoded
        dedup += done - validated
    return {
        "seconds": decode + validate + dedup,
        "rss_mb": _rss_mb(),
        "decisions": 0,
        "said": f"CPU: decode {decode:.2f} s, validate {validate:.2f} s, dedup {dedup:.2f} s",
    }


def phase(name: str, args: argparse.Namespace, plans_path: str) -> dict:
    from agents.backtest import Backtest
    from agents.backtest_cli import plan_messages, read_rule_file
    from autopause.runner import SHIPPED_RULES

    settings = Settings()
    end_ms = args.end_ms
    stream = messages(args.events, args.campaigns, args.minutes, end_ms)
    partitions = list(range(settings.partitions))
    plan_records = plan_messages(plans_path, partitions, settings.topics.plans, 0)
    rules = read_rule_file(str(SHIPPED_RULES))
    if name == "fold":
        from agents.pipeline import Pipeline

        pipeline = Pipeline(settings, lambda: stream[-1].timestamp or 0)
        pipeline.assign(partitions, [])
        started = time.perf_counter()
        pipeline.process(plan_records)
        for i in range(0, len(stream), 500):
            pipeline.process(stream[i : i + 500])
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "rss_mb": _rss_mb(), "rounds": 0, "decisions": 0}
    if name == "floor":
        return floor(settings, stream, end_ms)
    if name == "replay":
        replay = Backtest(settings, {"new": rules}, partitions, tick_ms=MIN)
        started = time.perf_counter()
        replay.feed(plan_records)
        replay.feed(stream)
        replay.finish(end_ms)
        seconds = time.perf_counter() - started
        verdicts = replay.verdicts["new"]
        return {
            "seconds": seconds,
            "rss_mb": _rss_mb(),
            "rounds": verdicts.rounds,
            "decisions": len(verdicts.decisions),
        }
    # cli: produce the stream to an embedded broker, then time the command in process.
    from aiokafka import AIOKafkaProducer

    from agents import backtest_cli
    from agents.broker import EmbeddedBroker
    from agents.topics import ensure_topics

    with EmbeddedBroker() as broker:
        settings = Settings(broker=broker.url)

        async def produce() -> None:
            await ensure_topics(settings)
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20)
            await producer.start()
            try:
                for m in stream:
                    await producer.send(
                        m.topic, m.value, partition=m.partition, timestamp_ms=m.timestamp
                    )
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(produce())
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        code = asyncio.run(
            backtest_cli.run(
                settings,
                str(SHIPPED_RULES),
                since=f"{args.minutes}m",
                plans=plans_path,
                tick="1m",
                as_json=True,
                out=out,
                err=err,
                now_ms=end_ms + 1,
            )
        )
        seconds = time.perf_counter() - started
        assert code == 0, err.getvalue()
        return {
            "seconds": seconds,
            "rss_mb": _rss_mb(),
            "rounds": None,
            "decisions": len(out.getvalue().splitlines()),
            "said": err.getvalue().strip().splitlines()[-1],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--campaigns", type=int, default=5_000)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--phases", default="fold,replay,cli")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--plans", help=argparse.SUPPRESS)
    parser.add_argument("--end-ms", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args, args.plans)))
        return
    plans = Path("/tmp/kpi-bench-backtest-plans.csv")
    plans.write_text(plans_csv(args.campaigns))
    end_ms = (int(time.time() * 1000) // MIN) * MIN
    print(
        f"== backtest: {args.events:,} events of {args.campaigns:,} planned campaigns over "
        f"{args.minutes} minutes of event time, the shipped rules, a round per minute",
        flush=True,
    )
    results = {}
    for name in args.phases.split(","):
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--phase",
                name,
                "--plans",
                str(plans),
                "--end-ms",
                str(end_ms),
                "--events",
                str(args.events),
                "--campaigns",
                str(args.campaigns),
                "--minutes",
                str(args.minutes),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        result = results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        rate = args.events / result["seconds"]
        ratio = (
            f", {rate / (args.events / results['fold']['seconds']):.2f}x the fold"
            if ("fold" in results and name != "fold")
            else ""
        )
        extra = f", {result['rounds']} rounds" if result.get("rounds") else ""
        print(
            f"  {name:<7} {result['seconds']:6.2f}s  {rate:>10,.0f} events/s{ratio}  "
            f"peak RSS {result['rss_mb']:,.0f} MB{extra}, {result['decisions']} decisions",
            flush=True,
        )
        if result.get("said"):
            print(f"          ({result['said']})")


if __name__ == "__main__":
    main()
