"""``kpi-monitor pauser``: the reference auto-pauser. Consumes the decisions topic with its own
consumer group and runs a command for each decision it may act on, exactly once per decision
(``autopause.ledger``), within its own limits (``autopause.policy``).

The command gets ``KPI_DECISION_ID``, ``KPI_CAMPAIGN`` and ``KPI_ACTION`` (``pause`` / ``resume``)
in its environment and the decision JSON on stdin; exit 0 means done, 3 means the campaign was
already in that state, anything else failed: retried with the same decision id, given up after
``--max-errors`` failures in a row. It runs in a process group of its own (``agents.command``).
The audit commands (history, undo, replay) are in ``agents.pauser_audit``.

Every message ends in the ledger: acted on, skipped, noted, dropped, or ``refused`` (not a
decision the pauser can judge, see ``policy.validate``); an unexpected failure while handling one
is recorded as ``error`` and the pauser goes on. While a decision is held (kill switch, its own
breaker) the pauser pauses its partitions but keeps polling, so it stays in its consumer group,
and reports the hold in its metrics (``--metrics-port``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import signal
import socket
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import OffsetAndMetadata

from autopause.ledger import Ledger
from autopause.policy import (
    ACT,
    DECLINE,
    DROP,
    NOTE,
    SHADOW,
    SKIP,
    WAIT,
    Limits,
    judge,
    retry_refused,
    validate,
)
from stream.settings import Settings

from .command import run_command
from .kafka_auth import aiokafka_kwargs
from .pauser_metrics import CLAIMED, PauserMetrics
from .topics import bootstrap_servers

log = logging.getLogger("kpi_monitor.pauser")
ALREADY = 3
OUTCOME_OF_ACTION = {
    DROP: "dropped",
    NOTE: "noted",
    SHADOW: "shadow",
    SKIP: "skipped",
    DECLINE: "skipped",
}
MAX_BACKOFF_SECONDS = 30.0

KeepAlive = Callable[[float], Awaitable[Any]]


def default_owner() -> str:
    """The claim owner of this pauser process, ``host:pid:space:token``: a random token makes it
    unique (two containers may share a hostname and a pid); host and pid are for people, and
    with ``space`` (``pid_space``) let a pauser of the same pid namespace see at once that the
    owner has ended (``owner_gone``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{pid_space()}:{uuid.uuid4().hex}"


@functools.cache
def pid_space() -> str:
    """This process's pid namespace, named so that no two live ones share the name on any host:
    the kernel's boot id and the namespace's inode, hashed. '' where unknown (no /proc)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:12]


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
    kill_grace_seconds: float = 2.0  # SIGTERM to the command's group, then SIGKILL
    owner: str = field(default_factory=default_owner)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    max_poll_interval_ms: int = 300_000

    @property
    def lease_ms(self) -> int:
        """How long a claim lives unrenewed, on the monotonic clock of the pauser waiting to take
        it over (its owner renews it every third of that while it acts): one attempt and one
        back-off, with a margin."""
        seconds = self.timeout_seconds + self.kill_grace_seconds + MAX_BACKOFF_SECONDS + 30
        return int(seconds * 1000)


def now_ms() -> int:
    """The wall clock: written down, never used to decide a takeover."""
    return time.time_ns() // 1_000_000


def monotonic_ms() -> int:
    """The clock a pauser measures another's silence on (``Ledger.claim``)."""
    return time.monotonic_ns() // 1_000_000


def owner_gone(owner: str) -> bool:
    """Whether a claim's owner (``default_owner``) has surely ended: it was a process of this
    very pid namespace (same host, same boot, same namespace) and its pid is gone. Any other
    owner (another pid namespace, as in two containers with one hostname; another host; a ledger
    written before owners named their namespace) is never declared gone: its lease runs out."""
    parts = owner.split(":")
    if len(parts) != 4:
        return False
    host, pid, space, _token = parts
    if not space or space != pid_space() or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


class Renewal:
    """Renews this pauser's claim on a decision every third of the lease while it acts (the
    command, the back-off between attempts), until the block ends. A renewal that finds the claim
    held by another pauser (this one went unrenewed for a lease: suspended, its ledger locked)
    logs it and stops: the outcome is then not this pauser's to record (``Ledger.record``)."""

    def __init__(self, config: PauserConfig, ledger: Ledger, decision_id: str) -> None:
        self.config, self.ledger, self.decision_id = config, ledger, decision_id
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """After the claim is won: renewing a claim not held would report it lost."""
        if self.task is None:
            self.task = asyncio.create_task(self.renew())

    async def renew(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_ms / 3000)
            try:
                renewed = self.ledger.renew(self.decision_id, self.config.owner, now_ms())
            except sqlite3.Error as exc:  # a locked ledger: the next renewal may pass
                log.warning("decision %s: claim not renewed (%s)", self.decision_id, exc)
                continue
            if not renewed:
                log.error(
                    "decision %s: claim lost to %s (not renewed for a lease): this pauser will "
                    "not record its outcome",
                    self.decision_id,
                    self.ledger.holder(self.decision_id),
                )
                return

    async def __aenter__(self) -> Renewal:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait({self.task})


async def act(config: PauserConfig, ledger: Ledger, decision: dict, action: str) -> str | None:
    """Run the command until it succeeds or fails ``max_errors`` times in a row; the outcome.
    None: another pauser holds the decision's claim, or took it over from this one (ask again
    later: its outcome will be in the ledger)."""
    async with Renewal(config, ledger, decision["decision_id"]) as renewal:
        return await attempts(config, ledger, decision, action, renewal)


async def attempts(
    config: PauserConfig, ledger: Ledger, decision: dict, action: str, renewal: Renewal
) -> str | None:
    delay = config.retry_seconds
    # An earlier attempt (this process's, or one killed mid-command) may have run the command:
    # its "already in that state" is then this pauser's own doing, and the pause is its own.
    earlier = ledger.get(decision["decision_id"])
    may_have_run = earlier is not None and earlier.outcome in ("started", "failed")
    for attempt in range(1, config.max_errors + 1):
        stop = attempt > 1 and retry_refused(
            decision,
            now_ms(),
            Path(config.kill_switch).exists(),  # noqa: ASYNC240 (one stat)
        )
        if stop:
            if not ledger.record(
                decision,
                now_ms(),
                "given_up",
                stop,
                action=action,
                attempts=attempt - 1,
                owner=config.owner,
            ):
                return None
            log.error("%s campaign %r: given up, %s", action, decision["campaign_id"], stop)
            return "given_up"
        claim = ledger.claim(
            decision,
            config.owner,
            now_ms(),
            config.lease_ms,
            monotonic_ms=monotonic_ms(),
            action=action,
            attempts=attempt,
            owner_gone=owner_gone,
        )
        if not claim.won:
            return None if claim.outcome is None else "skipped"
        if claim.taken_from is not None:
            may_have_run = True  # its owner was running the command
            log.warning(
                "decision %s: took over the claim of %s (not renewed for a lease, or its process "
                "ended): running the command again",
                decision["decision_id"],
                claim.taken_from,
            )
        renewal.start()
        code = await run_command(
            config.command,
            decision,
            action,
            config.timeout_seconds,
            kill_grace=config.kill_grace_seconds,
        )
        if code in (0, ALREADY):
            ours = code == 0 or may_have_run
            outcome = "done" if ours else "already"
            prior = ("running" if action == "pause" else "paused") if ours else None
            reason = "" if code == 0 or not ours else "already: an earlier attempt had run it"
            if not ledger.record(
                decision,
                now_ms(),
                outcome,
                reason,
                action=action,
                acted_at_ms=now_ms(),
                prior_state=prior,
                exit_code=code,
                attempts=attempt,
                owner=config.owner,
            ):
                return None
            log.warning(
                "%s campaign %r (decision %s, rule %s): %s",
                action,
                decision["campaign_id"],
                decision["decision_id"],
                decision["rule"],
                outcome,
            )
            return outcome
        may_have_run = True  # a command that failed (or timed out) may have acted first
        if not ledger.record(
            decision,
            now_ms(),
            "failed",
            f"exit {code}",
            action=action,
            exit_code=code,
            attempts=attempt,
            owner=config.owner,
        ):
            return None
        log.error(
            "%s campaign %r: command failed (exit %s), attempt %d of %d",
            action,
            decision["campaign_id"],
            code,
            attempt,
            config.max_errors,
        )
        if attempt < config.max_errors:
            await asyncio.sleep(delay)
            delay = min(MAX_BACKOFF_SECONDS, delay * 2)
    if not ledger.record(
        decision,
        now_ms(),
        "given_up",
        f"{config.max_errors} failures in a row",
        action=action,
        attempts=config.max_errors,
        owner=config.owner,
    ):
        return None
    return "given_up"


# -- one decision, one message -------------------------------------------------------------------


async def handle(
    config: PauserConfig,
    ledger: Ledger,
    decision: dict,
    *,
    metrics: PauserMetrics | None = None,
    keep_alive: KeepAlive = asyncio.sleep,
) -> str:
    """One valid decision, start to end: the outcome recorded. Holds while the policy says wait
    (calling ``keep_alive`` between looks), or while another pauser runs its command."""
    metrics = metrics or PauserMetrics()
    if "campaigns_judged" in decision and "partition" in decision:
        ledger.note_partition_size(decision["partition"], decision["campaigns_judged"])
    held_since, held_for = time.monotonic(), None
    try:
        while True:
            action = judge(
                decision,
                now_ms(),
                ledger.known(decision, now_ms()),
                config.limits,
                kill_switch=Path(config.kill_switch).exists(),  # noqa: ASYNC240 (one stat)
            )
            if action.kind == ACT:
                outcome = await act(config, ledger, decision, action.reason)
                if outcome is not None:
                    return outcome
                action = action._replace(
                    kind=WAIT, reason="another pauser is running its command", held_by=CLAIMED
                )
            if action.kind != WAIT:
                break
            if action.reason != held_for:
                log.warning("holding decision %s: %s", decision["decision_id"], action.reason)
                held_for = action.reason
            metrics.hold(action.held_by or "", time.monotonic() - held_since)
            await keep_alive(1.0)
    finally:
        metrics.release()
    outcome = OUTCOME_OF_ACTION[action.kind]
    # A skip is a decision already recorded; any other outcome never replaces a final one that
    # another pauser recorded meanwhile (its command's outcome): then this one is a skip too.
    if action.kind != SKIP and not ledger.record(
        decision, now_ms(), outcome, action.reason, keep_final=True, keep_attempt=True
    ):
        outcome = "skipped"
    if action.kind == SHADOW:
        log.warning("%s", action.reason)
    return outcome


def parse(value: bytes | None) -> dict | str:
    """A message's value: the decision, or why it is not one the pauser can judge."""
    if value is None:
        return "empty message (no value)"
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    return validate(parsed)


class Message(Protocol):
    """What the pauser reads of a Kafka record (aiokafka's ``ConsumerRecord``)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


async def handle_message(
    config: PauserConfig,
    ledger: Ledger,
    message: Message,
    *,
    metrics: PauserMetrics | None = None,
    keep_alive: KeepAlive = asyncio.sleep,
) -> str:
    """One message off the topic, whatever it holds: its outcome, recorded in the ledger."""
    metrics = metrics or PauserMetrics()
    checked = parse(message.value)
    if isinstance(checked, str):
        # Keyed by its place on the topic: a bad message must not take a good decision's id.
        place = f"{message.topic}:{message.partition}:{message.offset}"
        body = (message.value or b"").decode("utf-8", "backslashreplace")
        ledger.refuse(place, now_ms(), checked, body)
        log.error("refused the message at %s: %s", place, checked)
        outcome = "refused"
    else:
        try:
            outcome = await handle(config, ledger, checked, metrics=metrics, keep_alive=keep_alive)
        except Exception as exc:
            # Final: the command may have run; it is not run again for this decision. If even
            # this write fails the ledger is unusable, and the pauser stops (uncommitted).
            log.exception("decision %s: handling failed", checked["decision_id"])
            ledger.record(
                checked, now_ms(), "error", f"{type(exc).__name__}: {exc}", keep_final=True
            )
            outcome = "error"
    metrics.count(outcome)
    return outcome


async def keep_polling(consumer: AIOKafkaConsumer, seconds: float) -> None:
    """Wait while staying in the group: fetching paused, ``getmany`` called all along (aiokafka
    leaves the group after ``max_poll_interval_ms`` without one)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        consumer.pause(*consumer.assignment())  # a rebalance meanwhile assigns unpaused
        stray = await consumer.getmany(timeout_ms=max(1, int(left * 1000)))
        for tp, records in stray.items():
            consumer.seek(tp, records[0].offset)  # read again once the hold is over


async def run(settings: Settings, config: PauserConfig, *, stop_after: float | None = None) -> None:
    ledger = Ledger(config.ledger)
    metrics = PauserMetrics()
    stop_serving = (
        metrics.serve(config.metrics_host, config.metrics_port)
        if config.metrics_port is not None
        else None
    )
    consumer = AIOKafkaConsumer(
        settings.topics.decisions,
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        group_id=config.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.session_timeout_seconds * 1000),
        heartbeat_interval_ms=max(500, int(settings.session_timeout_seconds * 200)),
        max_poll_interval_ms=config.max_poll_interval_ms,
        **aiokafka_kwargs(settings),
    )
    await consumer.start()
    # SIGTERM cancels, as Ctrl-C does: a running command's process group is ended, not orphaned.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    deadline = None if stop_after is None else time.monotonic() + stop_after
    print(
        f"kpi-monitor pauser: {config.limits.mode} mode, ledger {config.ledger}, "
        f"reading {settings.topics.decisions}",
        flush=True,
    )

    async def keep_alive(seconds: float) -> None:
        await keep_polling(consumer, seconds)

    try:
        while deadline is None or time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batch.items():
                for message in messages:
                    await handle_message(
                        config, ledger, message, metrics=metrics, keep_alive=keep_alive
                    )
                    consumer.resume(*consumer.paused())
                    if not await commit(consumer, tp, message.offset + 1):
                        break
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
        await consumer.stop()
        ledger.close()
        if stop_serving is not None:
            stop_serving()


async def commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bool:
    """The ledger holds the outcome: only now may the group move past it. False: the partition
    went to another member (a rebalance); it starts after the last commit, and the shared
    ledger (or the command's exit 3) keeps what this pauser did from being done twice."""
    try:
        await consumer.commit(
            {TopicPartition(tp.topic, tp.partition): OffsetAndMetadata(offset, "")}
        )
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning(
            "could not commit %s at %d (%s): the rest of its batch is left", tp, offset, exc
        )
        return False
    return True
