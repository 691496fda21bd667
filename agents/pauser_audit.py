"""``kpi-monitor pauser history | undo | replay``: the reference pauser's audit trail read back,
one action undone, and a backtest of its policy over the decisions topic."""

from __future__ import annotations

import dataclasses
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition

from autopause.ledger import Ledger
from autopause.policy import ACT, WAIT, judge
from autopause.records import explain
from stream.durations import parse_duration
from stream.settings import Settings

from .command import run_command
from .kafka_auth import aiokafka_kwargs
from .pauser import ALREADY, OUTCOME_OF_ACTION, PauserConfig, now_ms, parse
from .topics import bootstrap_servers


def history(ledger_path: str, campaign: str | None, limit: int, out=sys.stdout) -> int:
    ledger = Ledger(ledger_path)
    try:
        for entry in ledger.history(campaign, limit):
            why = explain(entry.decision.get("evidence"))
            # A pause for the rest of the day: the worker issues its resume then.
            until = entry.decision.get("resume_at")
            until = f"  until {until}" if isinstance(until, str) else ""
            print(
                f"{entry.decision.get('issued_at', '?')}  {entry.decision_id}  {entry.campaign}  "
                f"{entry.rule}  {entry.verdict} -> {entry.outcome}"
                f"{' (' + entry.reason + ')' if entry.reason else ''}{until}  {why}",
                file=out,
            )
    finally:
        ledger.close()
    return 0


async def undo(config: PauserConfig, decision_id: str) -> int:
    ledger = Ledger(config.ledger)
    try:
        entry = ledger.get(decision_id)
        if entry is not None and entry.verdict == "notify":
            print(
                f"kpi-monitor pauser: nothing to undo for {decision_id}: a notify decision "
                "acts on nothing",
                file=sys.stderr,
            )
            return 1
        if entry is None or entry.outcome != "done" or entry.prior_state is None:
            state = "not in the ledger" if entry is None else f"recorded as {entry.outcome}"
            print(
                f"kpi-monitor pauser: nothing to undo for {decision_id}: {state}", file=sys.stderr
            )
            return 1
        action = "resume" if entry.prior_state == "running" else "pause"
        decision = entry.decision
        code = await run_command(
            config.command, decision, action, config.timeout_seconds, {"KPI_UNDO_OF": decision_id}
        )
        if code not in (0, ALREADY):
            print(
                f"kpi-monitor pauser: undo of {decision_id} failed (exit {code})", file=sys.stderr
            )
            return 1
        ledger.record(
            decision,
            now_ms(),
            "undone",
            f"{action} by undo",
            action=action,
            acted_at_ms=now_ms(),
            exit_code=code,
            attempts=entry.attempts,
        )
        print(f"undone {decision_id}: {action} campaign {entry.campaign}")
        if action == "resume" and entry.decision.get("resume_at"):
            # The worker still issues the midnight resume; the command answers "already".
            print(f"  (it was paused until {entry.decision['resume_at']}; resumed now instead)")
        return 0
    finally:
        ledger.close()


async def replay(settings: Settings, config: PauserConfig, since: str, out=sys.stdout) -> int:
    """What the pauser would have done with the decisions of the last ``since``: read the topic
    from that time, judge each decision against an in-memory ledger, act on nothing."""
    start_ms = now_ms() - int(parse_duration(since) * 1000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        group_id=None,
        enable_auto_commit=False,
        **aiokafka_kwargs(settings),
    )
    await consumer.start()
    ledger = Ledger(":memory:")
    counts: dict[str, int] = {}
    try:
        partitions = consumer.partitions_for_topic(settings.topics.decisions) or set()
        tps = [TopicPartition(settings.topics.decisions, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        done = {tp for tp in tps if ends[tp] == 0}
        while len(done) < len(tps):
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                break
            for tp, messages in batch.items():
                for message in messages:
                    decision = parse(message.value)
                    if isinstance(decision, str):
                        counts["refused"] = counts.get("refused", 0) + 1
                        print(f"{tp}:{message.offset}: refused ({decision})", file=out)
                    elif decision.get("issued_at_ms", 0) >= start_ms:
                        if "campaigns_judged" in decision and "partition" in decision:
                            ledger.note_partition_size(
                                decision["partition"], decision["campaigns_judged"]
                            )
                        action = judge(
                            decision,
                            decision["issued_at_ms"],
                            ledger.known(decision, decision["issued_at_ms"]),
                            dataclasses.replace(config.limits, mode="live"),
                        )
                        kind = {ACT: "would " + action.reason, WAIT: "held back"}.get(
                            action.kind, action.kind
                        )
                        ledger.record(
                            decision,
                            decision["issued_at_ms"],
                            "done"
                            if action.kind == ACT
                            else OUTCOME_OF_ACTION.get(action.kind, action.kind),
                            action.reason,
                            action=action.reason if action.kind == ACT else None,
                            acted_at_ms=decision["issued_at_ms"],
                        )
                        counts[kind] = counts.get(kind, 0) + 1
                        print(
                            f"{decision.get('issued_at', '?')}  {decision['campaign_id']}  "
                            f"{decision['rule']}  {decision['verdict']}: {kind} "
                            f"({action.reason})",
                            file=out,
                        )
                    if message.offset + 1 >= ends[tp]:
                        done.add(tp)
    finally:
        await consumer.stop()
        ledger.close()
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no decisions"
    print(f"replay of the last {since}: {summary}", file=out)
    return 0
