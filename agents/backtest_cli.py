"""``kpi-monitor backtest``: what a rules file would have decided over the events on the topics.

Reads the input topics from the offsets at ``now - since - warm-up`` (Kafka's offsets for
times), merges the partitions in timestamp order, and replays them through ``agents.backtest``
(the workers' fold and decision engine, in process); decisions count from ``now - since``, the
warm-up before it fills the windows, horizons and baselines the rules read. Prints per rule the
campaigns it would have paused, resumed, held, suppressed or notified, when and why; with
``--compare OLD``, only the decisions that differ. A progress line on stderr while it reads.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from autopause.records import explain
from rulebook.rules import Rule, RuleError, parse_rules
from stream.baselines import DAY_MS
from stream.durations import format_duration, parse_duration
from stream.horizons import HORIZONS
from stream.plan_files import FileRefused, format_of, read_plans
from stream.plans import plan_key
from stream.settings import Settings

from .backtest import Backtest
from .kafka_auth import aiokafka_kwargs
from .pipeline import Message
from .topics import bootstrap_servers

_HORIZON_DAYS = {"today": 1, "7d": 7, "30d": 30, "flight": 31}


class BacktestError(ValueError):
    """Bad input (a rules or plans file, a duration); the message says which and why."""


def read_rule_file(path: str) -> list[Rule]:
    try:
        rules = parse_rules(yaml.safe_load(Path(path).read_text()))
    except OSError as exc:
        raise BacktestError(f"{path}: {exc.strerror}") from None
    except (RuleError, yaml.YAMLError) as exc:
        raise BacktestError(f"{path}: {exc}") from None
    deciding = [r for r in rules if r.kind == "kpi" and r.decides]
    if not deciding:
        raise BacktestError(f"{path}: no rule decides anything (may_pause or action: notify)")
    return deciding


def plan_messages(path: str, partitions: list[int], plans_topic: str, at_ms: int) -> list[Message]:
    """The plans of a plan file as records of the plans topic, in every partition (a campaign's
    plan is read where its events are; a channel default in every partition)."""
    try:
        text = Path(path).read_text()
        parsed = read_plans(text, format_of(path))
    except OSError as exc:
        raise BacktestError(f"{path}: {exc.strerror}") from None
    except FileRefused as exc:
        raise BacktestError(str(exc)) from None
    if parsed.errors:
        first = parsed.errors[0]
        raise BacktestError(
            f"{path}: {len(parsed.errors)} bad row(s), first on line {first.line}: {first.reason}"
        )
    return [
        Message(plans_topic, p, offset, orjson.dumps(plan.to_json()), at_ms, plan_key(plan))
        for p in partitions
        for offset, (_, plan) in enumerate(parsed.plans)
    ]


def warmup_ms(rules: list[Rule]) -> int:
    """How far before the judged period the replay starts, so that what the rules read (the
    trailing windows, the long horizons, the baselines) is whole when judging begins."""
    longest = 0
    for rule in rules:
        back = 0
        for condition in rule.conditions:
            for window in condition.windows:
                if window in HORIZONS:
                    back = max(back, _HORIZON_DAYS[window] * DAY_MS)
                else:
                    back = max(back, int(parse_duration(window) * 1000))
            ref = condition.baseline_ref
            if ref is not None:
                back = max(back, ref.baseline.span_ms + ref.window_ms + 3_600_000)
        longest = max(longest, back + int(rule.seconds("settle") * 1000))
    return longest


@dataclass
class ReadStats:
    messages: int = 0
    total: int = 0  # messages between the start offsets and the ends
    seconds: float = 0.0


async def replay_topics(
    settings: Settings,
    replay: Backtest,
    *,
    start_ms: int,
    end_ms: int,
    with_plans_topic: bool,
    progress: Callable[[ReadStats, int], None] = lambda stats, at_ms: None,
) -> ReadStats:
    """Feed ``replay`` the input topics (and the plans topic, from its beginning) from the
    offsets at ``start_ms`` to the ends as of now, in timestamp order; records stamped after
    ``end_ms`` (arrived during the backtest) are left out."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **aiokafka_kwargs(settings),
    )
    await consumer.start()
    stats = ReadStats()
    began = time.monotonic()
    try:
        topics = list(settings.topics.inputs())
        if with_plans_topic:
            topics.append(settings.topics.plans)
        tps = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return stats
        consumer.assign(tps)
        inputs = [tp for tp in tps if tp.topic != settings.topics.plans]
        found = await consumer.offsets_for_times(dict.fromkeys(inputs, start_ms))
        ends = await consumer.end_offsets(tps)
        starts: dict[TopicPartition, int] = {}
        for tp in tps:
            at = found.get(tp) if tp.topic != settings.topics.plans else None
            offset = (
                0 if tp.topic == settings.topics.plans else (ends[tp] if at is None else at.offset)
            )
            consumer.seek(tp, offset)
            starts[tp] = offset
        stats.total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        heap: list[tuple[int, int, str, int, Message]] = []
        latest: dict[TopicPartition, int] = {}
        done: set[TopicPartition] = set()
        idle_rounds = 0
        while True:
            batches = await consumer.getmany(timeout_ms=300, max_records=20_000)
            idle_rounds = 0 if batches else idle_rounds + 1
            for tp, records in batches.items():
                for record in records:
                    stamp = record.timestamp
                    if stamp > end_ms:
                        done.add(tp)
                        break
                    if stamp < start_ms and tp.topic != settings.topics.plans:
                        continue  # before the start: the embedded broker's offsets for times
                        # answer the first offset, whatever the time (shared notes)
                    message = Message(
                        tp.topic, tp.partition, record.offset, record.value, stamp, record.key
                    )
                    heapq.heappush(heap, (stamp, tp.partition, tp.topic, record.offset, message))
                    stats.messages += 1
                if records:
                    latest[tp] = records[-1].timestamp
            for tp in tps:
                if tp in done:
                    continue
                # The fetch responses' high watermark, not ListOffsets (short on the embedded
                # broker: shared notes); a partition with nothing left is done.
                mark = consumer.highwater(tp)
                position = await consumer.position(tp)
                if (mark is not None and position >= mark) or (
                    mark is None and position >= ends[tp] and idle_rounds >= 2
                ):
                    done.add(tp)
            open_ = [latest.get(tp, -1) for tp in tps if tp not in done]
            frontier = min(open_) if open_ else None
            ready = []
            while heap and (frontier is None or heap[0][0] <= frontier):
                ready.append(heapq.heappop(heap)[4])
            if ready:
                replay.feed(ready)
                stats.seconds = time.monotonic() - began
                progress(stats, ready[-1].timestamp or 0)
            if frontier is None and not heap:
                break
    finally:
        await consumer.stop()
    stats.seconds = time.monotonic() - began
    return stats


# -- printing ------------------------------------------------------------------------------------

VERDICT_ORDER = ("pause", "resume", "hold", "suppressed", "notify", "unknown")


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) + "Z"


def why(decision: dict) -> str:
    evidence = decision["evidence"]
    distrust = f"; {evidence['distrust']}" if evidence.get("distrust") else ""
    return explain(evidence) + distrust


def print_decisions(decisions: list[dict], out: TextIO, mark: str = "") -> None:
    by_rule: dict[str, list[dict]] = {}
    for d in decisions:
        by_rule.setdefault(d["rule"], []).append(d)
    for rule in sorted(by_rule):
        print(f"\n{rule}", file=out)
        for d in by_rule[rule]:
            until = f" until {_when(d['resume_at_ms'])}" if d.get("resume_at_ms") else ""
            print(
                f"  {mark}{_when(d['issued_at_ms'])}  {d['verdict']:<10} {d['campaign_id']:<24} "
                f"{why(d)}{until}",
                file=out,
            )


def summary_table(named: dict[str, list[dict]], out: TextIO) -> None:
    rules = sorted({d["rule"] for decisions in named.values() for d in decisions})
    print("\nsummary (decisions by rule and verdict; campaigns in brackets)", file=out)
    for name, decisions in named.items():
        counts = Counter((d["rule"], d["verdict"]) for d in decisions)
        campaigns = {
            key: len({d["campaign_id"] for d in decisions if (d["rule"], d["verdict"]) == key})
            for key in counts
        }
        print(f"  {name}", file=out)
        for rule in rules:
            cells = [
                f"{v} {counts[(rule, v)]} [{campaigns[(rule, v)]}]"
                for v in VERDICT_ORDER
                if counts.get((rule, v))
            ]
            print(f"    {rule:<28} {', '.join(cells) or '-'}", file=out)


def identity(decision: dict) -> tuple:
    return (
        decision["campaign_id"],
        decision["rule"],
        decision["verdict"],
        decision["issued_at_ms"],
    )


def differences(new: list[dict], old: list[dict]) -> tuple[list[dict], list[dict]]:
    """Decisions only the new rules make, and only the old ones."""
    old_ids = {identity(d) for d in old}
    new_ids = {identity(d) for d in new}
    return [d for d in new if identity(d) not in old_ids], [
        d for d in old if identity(d) not in new_ids
    ]


def progress_printer(err: TextIO, every_s: float = 1.0) -> Callable[[ReadStats, int], None]:
    shown = [0.0]

    def show(stats: ReadStats, at_ms: int) -> None:
        now = time.monotonic()
        if now - shown[0] < every_s:
            return
        shown[0] = now
        share = stats.messages / stats.total if stats.total else 1.0
        width = 30
        bar = "#" * int(width * min(share, 1.0))
        rate = stats.messages / stats.seconds if stats.seconds else 0.0
        err.write(
            f"\r[{bar:<{width}}] {min(share, 1.0):4.0%} {stats.messages:,} messages, "
            f"{rate:,.0f}/s, event time {_when(at_ms)}   "
        )
        err.flush()

    return show


async def run(
    settings: Settings,
    rules_path: str,
    *,
    since: str,
    compare: str | None = None,
    plans: str | None = None,
    tick: str | None = None,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    now_ms: int | None = None,
) -> int:
    try:
        new = read_rule_file(rules_path)
        old = read_rule_file(compare) if compare else None
        since_ms = int(parse_duration(since) * 1000)
        tick_ms = (
            int(parse_duration(tick) * 1000)
            if tick
            else max(settings.bucket_seconds, int(settings.decision_interval_seconds)) * 1000
        )
    except (BacktestError, ValueError) as exc:
        print(f"kpi-monitor backtest: {exc}", file=err)
        return 2
    end_ms = int(time.time() * 1000) if now_ms is None else now_ms
    judge_from = end_ms - since_ms
    warmup = warmup_ms(new + (old or []))
    sets = {"new": new} if old is None else {"new": new, "old": old}
    partitions = list(range(settings.partitions))
    replay = Backtest(settings, sets, partitions, tick_ms=tick_ms, judge_from_ms=judge_from)
    if plans:
        try:
            replay.feed(plan_messages(plans, partitions, settings.topics.plans, 0))
        except BacktestError as exc:
            print(f"kpi-monitor backtest: {exc}", file=err)
            return 2
    print(
        f"backtest {rules_path}{' against ' + compare if compare else ''}: judging "
        f"{_when(judge_from)} .. {_when(end_ms)} every {format_duration(tick_ms / 1000)}, "
        f"after {format_duration(warmup / 1000)} of warm-up",
        file=err,
    )
    stats = await replay_topics(
        settings,
        replay,
        start_ms=judge_from - warmup,
        end_ms=end_ms,
        with_plans_topic=plans is None,
        progress=progress_printer(err),
    )
    replay.finish(end_ms)
    rate = replay.events / stats.seconds if stats.seconds else 0.0
    err.write(
        f"\rread {stats.messages:,} messages ({replay.events:,} events, "
        f"{replay.dead_letters:,} refused) in {stats.seconds:.1f}s: {rate:,.0f} events/s\n"
    )
    decisions = replay.verdicts["new"].decisions
    if old is None:
        if as_json:
            for d in decisions:
                print(orjson.dumps(d).decode(), file=out)
            return 0
        print_decisions(decisions, out)
        summary_table({rules_path: decisions}, out)
        return 0
    added, dropped = differences(decisions, replay.verdicts["old"].decisions)
    if as_json:
        for mark, group in (("+", added), ("-", dropped)):
            for d in group:
                print(
                    orjson.dumps({"only_in": "new" if mark == "+" else "old", **d}).decode(),
                    file=out,
                )
        return 0
    print(f"decisions only under {rules_path} (+) and only under {compare} (-):", file=out)
    print_decisions(added, out, "+ ")
    print_decisions(dropped, out, "- ")
    if not added and not dropped:
        print("  none: the two rule files decide the same", file=out)
    summary_table({rules_path: decisions, str(compare): replay.verdicts["old"].decisions}, out)
    return 0
