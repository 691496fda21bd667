"""``kpi-monitor pauser``: the reference auto-pauser. Consumes the decisions topic with its own
consumer group and runs a command for each decision it may act on, exactly once per decision
(``autopause.ledger``), within its own limits (``autopause.policy``).

The command gets ``KPI_DECISION_ID``, ``KPI_CAMPAIGN`` and ``KPI_ACTION`` (``pause`` / ``resume``)
in its environment and the decision JSON on stdin; exit 0 means done, 3 means the campaign was
already in that state, anything else failed: retried with the same decision id, given up after
``--max-errors`` failures in a row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from autopause.ledger import Ledger
from autopause.policy import ACT, DROP, NOTE, SHADOW, SKIP, WAIT, Limits, judge
from stream.durations import parse_duration
from stream.settings import Settings

from .kafka_auth import aiokafka_kwargs
from .topics import bootstrap_servers

log = logging.getLogger("kpi_monitor.pauser")
ALREADY = 3
OUTCOME_OF_ACTION = {DROP: "dropped", NOTE: "noted", SHADOW: "shadow", SKIP: "skipped"}


@dataclass(frozen=True)
class PauserConfig:
    command: str
    ledger: str = "kpi-pauser.sqlite"
    group: str = "kpi-pauser"
    limits: Limits = field(default_factory=Limits)
    kill_switch: str = "kpi-pauser.stop"
    max_errors: int = 5
    timeout_seconds: float = 60.0
    retry_seconds: float = 1.0  # first back-off after a failure, doubled up to 30 s


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def run_command(
    command: str,
    decision: dict,
    action: str,
    timeout: float,
    extra_env: dict[str, str] | None = None,
) -> int:
    env = dict(
        os.environ,
        KPI_DECISION_ID=decision["decision_id"],
        KPI_CAMPAIGN=decision["campaign_id"],
        KPI_ACTION=action,
        **(extra_env or {}),
    )
    process = await asyncio.create_subprocess_shell(command, env=env, stdin=asyncio.subprocess.PIPE)
    try:
        await asyncio.wait_for(process.communicate(orjson.dumps(decision)), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1
    return process.returncode if process.returncode is not None else -1


async def act(config: PauserConfig, ledger: Ledger, decision: dict, action: str) -> str:
    """Run the command until it succeeds or fails ``max_errors`` times in a row; the outcome."""
    delay = config.retry_seconds
    for attempt in range(1, config.max_errors + 1):
        ledger.record(decision, now_ms(), "started", action=action, attempts=attempt)
        code = await run_command(config.command, decision, action, config.timeout_seconds)
        if code in (0, ALREADY):
            outcome = "done" if code == 0 else "already"
            prior = ("running" if action == "pause" else "paused") if code == 0 else None
            ledger.record(
                decision,
                now_ms(),
                outcome,
                action=action,
                acted_at_ms=now_ms(),
                prior_state=prior,
                exit_code=code,
                attempts=attempt,
            )
            log.warning(
                "%s campaign %s (decision %s, rule %s): %s",
                action,
                decision["campaign_id"],
                decision["decision_id"],
                decision["rule"],
                outcome,
            )
            return outcome
        ledger.record(
            decision,
            now_ms(),
            "failed",
            f"exit {code}",
            action=action,
            exit_code=code,
            attempts=attempt,
        )
        log.error(
            "%s campaign %s: command failed (exit %s), attempt %d of %d",
            action,
            decision["campaign_id"],
            code,
            attempt,
            config.max_errors,
        )
        if attempt < config.max_errors:
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)
    ledger.record(
        decision,
        now_ms(),
        "given_up",
        f"{config.max_errors} failures in a row",
        action=action,
        attempts=config.max_errors,
    )
    return "given_up"


async def handle(config: PauserConfig, ledger: Ledger, decision: dict) -> str:
    """One decision, start to end: the outcome recorded. Waits while the policy says wait."""
    if "campaigns_judged" in decision and "partition" in decision:
        ledger.note_partition_size(decision["partition"], decision["campaigns_judged"])
    waited_for = None
    while True:
        action = judge(
            decision,
            now_ms(),
            ledger.known(decision, now_ms()),
            config.limits,
            kill_switch=Path(config.kill_switch).exists(),  # noqa: ASYNC240 (one stat)
        )
        if action.kind != WAIT:
            break
        if action.reason != waited_for:
            log.warning(
                "not acting on decision %s for now: %s", decision["decision_id"], action.reason
            )
            waited_for = action.reason
        await asyncio.sleep(1.0)
    if action.kind == ACT:
        return await act(config, ledger, decision, action.reason)
    outcome = OUTCOME_OF_ACTION[action.kind]
    if action.kind != SKIP:  # a skip is a decision already recorded
        ledger.record(decision, now_ms(), outcome, action.reason)
    if action.kind == SHADOW:
        log.warning("%s", action.reason)
    return outcome


async def run(settings: Settings, config: PauserConfig, *, stop_after: float | None = None) -> None:
    ledger = Ledger(config.ledger)
    consumer = AIOKafkaConsumer(
        settings.topics.decisions,
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        group_id=config.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout_seconds * 1000),
        heartbeat_interval_ms=max(500, int(settings.session_timeout_seconds * 200)),
        **aiokafka_kwargs(settings),
    )
    await consumer.start()
    deadline = None if stop_after is None else time.monotonic() + stop_after
    print(
        f"kpi-monitor pauser: {config.limits.mode} mode, ledger {config.ledger}, "
        f"reading {settings.topics.decisions}",
        flush=True,
    )
    try:
        while deadline is None or time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batch.items():
                for message in messages:
                    try:
                        decision = orjson.loads(message.value)
                        decision["decision_id"]
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        log.error("skipping a malformed decision at %s:%d", tp, message.offset)
                    else:
                        await handle(config, ledger, decision)
                    # The ledger holds the outcome: only now may the group move past it.
                    await consumer.commit(
                        {
                            TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(
                                message.offset + 1, ""
                            )
                        }
                    )
    finally:
        await consumer.stop()
        ledger.close()


# -- audit, undo, replay -----------------------------------------------------------------------


def history(ledger_path: str, campaign: str | None, limit: int, out=sys.stdout) -> int:
    ledger = Ledger(ledger_path)
    try:
        for entry in ledger.history(campaign, limit):
            evidence = entry.decision.get("evidence", {})
            why = (
                f"{evidence.get('kpi')}={evidence.get('value')!r} {evidence.get('op')} "
                f"{evidence.get('threshold')} on {evidence.get('window')}"
                if evidence.get("kpi")
                else ""
            )
            print(
                f"{entry.decision.get('issued_at', '?')}  {entry.decision_id}  {entry.campaign}  "
                f"{entry.rule}  {entry.verdict} -> {entry.outcome}"
                f"{' (' + entry.reason + ')' if entry.reason else ''}  {why}",
                file=out,
            )
    finally:
        ledger.close()
    return 0


async def undo(config: PauserConfig, decision_id: str) -> int:
    ledger = Ledger(config.ledger)
    try:
        entry = ledger.get(decision_id)
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
                    decision = orjson.loads(message.value)
                    if decision.get("issued_at_ms", 0) >= start_ms:
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
                            f"{decision['issued_at']}  {decision['campaign_id']}  "
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
