"""``kpi-monitor plans load | show | remove``: campaign plans onto the compacted plans topic, and
back.

``load`` reads a CSV, JSON-lines or YAML file (``stream.plan_files``), names every bad row with
its line and reason, and publishes the good ones, keyed by campaign_id (a channel default by its
own key), to every partition: each partition folds its own copy, so a campaign's plan is where
its events are whatever partitioner their producers use (Java's murmur2, librdkafka's CRC32), and
a channel default reaches every campaign of the channel. Every record's delivery is awaited: a
row is "published" only once the broker has acknowledged it on every partition. ``show`` reads
the topic to its end and prints the plans in force, validated as the workers validate them, and
the records they refuse. ``remove`` publishes a tombstone to every partition.

Exit codes of ``load`` and ``remove``:

- 0: every row valid and delivered to every partition;
- 1: some rows refused by validation, each named on stderr (the good ones are published);
- 2: nothing done: the file cannot be read, or no broker is set;
- 3: some records not delivered: the broker refused them or never acknowledged them (each row
  named on stderr with the broker's error), or the broker could not be reached. Rows delivered
  again replace themselves (one key per campaign), so loading the file again once the broker
  takes them is safe. 3 wins over 1.

Exit codes of ``show``: 0 the topic read to its end; 1 the campaign asked for has no plan of its
own; 2 no broker set; 3 the topic could not be read to its end.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from stream.plan_files import FileRefused, format_of, read_plans
from stream.plans import Plan, channel_key, decode_plan_record, plan_key
from stream.settings import Settings

from .kafka_auth import aiokafka_kwargs
from .topics import bootstrap_servers, ensure_topics

OK, REFUSED_ROWS, NOTHING_DONE, NOT_DELIVERED = 0, 1, 2, 3
Record = tuple[bytes, bytes | None]  # (key, value: None for a tombstone)


class NotDelivered(RuntimeError):
    """Some plans were not acknowledged by the broker; the message names them."""


async def load(
    settings: Settings,
    path: str,
    *,
    dry_run: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """0 when every row was good and delivered; 1 when some were refused by validation (the
    good ones are published all the same); 2 when the file could not be read at all (or no
    broker is set); 3 when some rows were not delivered (each named on stderr: line,
    campaign or channel, the broker's error) or the broker could not be reached."""
    try:
        # Bytes, decoded whole: text mode would turn a bare \r into a line end, and a JSON row
        # whose white space holds one would split in two.
        text = Path(path).read_bytes().decode("utf-8")  # noqa: ASYNC240 (a CLI: nothing else runs)
        read = read_plans(text, format_of(path))
    except UnicodeDecodeError as exc:
        print(
            f"kpi-monitor plans load: {path}: not UTF-8 at byte {exc.start}: save it as "
            "UTF-8 (CSV UTF-8 in a spreadsheet)",
            file=err,
        )
        return NOTHING_DONE
    except (FileRefused, OSError) as exc:
        print(f"kpi-monitor plans load: {path}: {exc}", file=err)
        return NOTHING_DONE
    for error in read.errors:
        print(f"{path}:{error.line}: {error.reason}", file=err)
    plans = [plan for _, plan in read.plans]
    refused = len(read.errors)
    if dry_run:
        summary = _summary(plans, refused)
        print(f"checked {path}: {summary} (nothing published: --dry-run)", file=out)
        return REFUSED_ROWS if refused else OK
    if settings.broker is None:
        print("kpi-monitor plans load: set KPI_BROKER or --broker", file=err)
        return NOTHING_DONE
    try:
        await ensure_topics(settings)
        failed = await deliver(settings, [_record(plan) for plan in plans])
    except KafkaError as exc:
        print(
            f"kpi-monitor plans load: {path}: nothing published: {_unreachable(settings, exc)}",
            file=err,
        )
        return NOT_DELIVERED
    for index, why in sorted(failed.items()):
        line, plan = read.plans[index]
        print(f"{path}:{line}: {_whose(plan)} not delivered: {why}", file=err)
    delivered = [plan for index, plan in enumerate(plans) if index not in failed]
    print(f"published {path}: {_summary(delivered, refused, len(failed))}", file=out)
    if failed:
        print(
            f"kpi-monitor plans load: {len(failed)} rows not delivered (named above); fix "
            f"them, or what refuses them on the broker, and load {path} again (rows already "
            "delivered are replaced, not doubled)",
            file=err,
        )
        return NOT_DELIVERED
    return REFUSED_ROWS if refused else OK


def _summary(plans: Sequence[Plan], refused: int, undelivered: int | None = None) -> str:
    campaigns = sum(plan.campaign is not None for plan in plans)
    text = (
        f"{campaigns} campaign plans and {len(plans) - campaigns} channel defaults; "
        f"{refused} rows refused"
    )
    return text if undelivered is None else f"{text}; {undelivered} rows not delivered"


def _whose(plan: Plan) -> str:
    return f"campaign {plan.campaign}" if plan.campaign is not None else f"channel {plan.channel}"


def _record(plan: Plan) -> Record:
    return plan_key(plan), orjson.dumps(plan.to_json())


def _unreachable(settings: Settings, exc: KafkaError) -> str:
    return (
        f"the broker at {settings.broker} could not be used ({exc}); check --broker "
        "(KPI_BROKER), that the broker runs and that these credentials may write the plans "
        "topic, then try again"
    )


async def publish(settings: Settings, plans: Iterable[Plan]) -> None:
    """Every plan to every partition of the plans topic, each delivery awaited. Raises
    NotDelivered naming the plans the broker did not acknowledge, KafkaError when it cannot be
    reached."""
    plans = list(plans)
    failed = await deliver(settings, [_record(plan) for plan in plans])
    if failed:
        named = [f"{_whose(plans[index])}: {why}" for index, why in sorted(failed.items())]
        raise NotDelivered(f"{len(failed)} plans not delivered: " + "; ".join(named[:5]))


async def deliver(settings: Settings, records: Sequence[Record]) -> dict[int, str]:
    """Every record to every partition of the plans topic: by index in ``records``, why a
    record is not on every partition (the broker's error, by partition); empty when the broker
    acknowledged them all. Raises KafkaError when the broker cannot be reached."""
    producer = _producer(settings)
    topic = settings.topics.plans
    try:
        await producer.start()
        partitions = sorted(await producer.partitions_for(topic))
        if not partitions:
            return dict.fromkeys(range(len(records)), f"the topic {topic} has no partitions")
        failures = await _send_all(producer, topic, records, partitions)
        refused = [place for place, exc in failures.items() if _answered(exc)]
        if len(refused) <= MAX_RESENT:
            failures.update(await _resend_one_by_one(producer, topic, records, refused))
    finally:
        await producer.stop()
    errors: dict[int, dict[int, str]] = {}  # record index -> partition -> error
    for (index, partition), exc in sorted(failures.items()):
        if exc is not None:
            errors.setdefault(index, {})[partition] = str(exc) or type(exc).__name__
    return {index: _why(by_partition, len(partitions)) for index, by_partition in errors.items()}


Place = tuple[int, int]  # (record index, partition)


async def _send_all(
    producer: AIOKafkaProducer, topic: str, records: Sequence[Record], partitions: list[int]
) -> dict[Place, BaseException | None]:
    """Each record to each partition, the failed ones with their exception. The sends are
    queued first and their futures gathered after: aiokafka batches them, so thousands of rows x
    partitions cost a few round trips (5,000 rows x 4 partitions: 0.7 s for the whole command on
    the embedded broker). ``flush()`` alone would not do: it raises nothing when the broker
    refuses a batch."""
    failures: dict[Place, BaseException | None] = {}
    sent: list[tuple[Place, asyncio.Future]] = []
    for index, (key, value) in enumerate(records):
        for partition in partitions:
            try:
                future = await producer.send(topic, value, key=key, partition=partition)
            except KafkaError as exc:  # refused before it left: too large, no metadata in time
                failures[index, partition] = exc
                continue
            sent.append(((index, partition), future))
    results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
    for (place, _), result in zip(sent, results):
        if isinstance(result, BaseException):
            failures[place] = result
    return failures


# A broker refuses a record's whole batch, and the records that shared it with it: those are sent
# again one at a time so that only the records it refuses themselves are reported. Bounded: one
# round trip each (per partition, the partitions at once).
MAX_RESENT = 4000


def _answered(exc: BaseException | None) -> bool:
    """Whether the broker answered with a refusal (not a time-out or a lost connection, which a
    second try one by one would only wait for again)."""
    return (
        isinstance(exc, KafkaError)
        and not isinstance(exc, KafkaTimeoutError)
        and not getattr(exc, "retriable", False)
    )


async def _resend_one_by_one(
    producer: AIOKafkaProducer, topic: str, records: Sequence[Record], places: list[Place]
) -> dict[Place, BaseException | None]:
    by_partition: dict[int, list[int]] = {}
    for index, partition in sorted(places):
        by_partition.setdefault(partition, []).append(index)

    async def resend(partition: int, indexes: list[int]) -> dict[Place, BaseException | None]:
        outcome: dict[Place, BaseException | None] = {}
        for index in indexes:  # awaited one by one: each record alone in its batch
            key, value = records[index]
            try:
                await producer.send_and_wait(topic, value, key=key, partition=partition)
                outcome[index, partition] = None
            except KafkaError as exc:
                outcome[index, partition] = exc
        return outcome

    outcomes = await asyncio.gather(*(resend(p, ixs) for p, ixs in by_partition.items()))
    return {place: exc for outcome in outcomes for place, exc in outcome.items()}


def _why(errors: dict[int, str], partitions: int) -> str:
    """'partitions 0, 1 of 4: [Error -1] UnknownError', one clause per distinct error."""
    by_error: dict[str, list[int]] = {}
    for partition, error in sorted(errors.items()):
        by_error.setdefault(error, []).append(partition)
    return "; ".join(
        f"partition{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))} "
        f"of {partitions}: {error}"
        for error, numbers in by_error.items()
    )


async def remove(
    settings: Settings,
    campaign: str | None,
    channel: str | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """A tombstone for a campaign's plan (or a channel's default), in every partition. 0 when
    the broker acknowledged it on every partition; 2 when no broker is set; 3 when it was not
    delivered (the error on stderr: the plan stays in force where the tombstone is missing)."""
    if settings.broker is None:
        print("kpi-monitor plans remove: set KPI_BROKER or --broker", file=err)
        return NOTHING_DONE
    what = campaign if campaign is not None else f"channel {channel}"
    key = (campaign if campaign is not None else channel_key(channel or "")).encode()
    try:
        await ensure_topics(settings)
        failed = await deliver(settings, [(key, None)])
    except KafkaError as exc:
        print(
            f"kpi-monitor plans remove: {what}: nothing removed: {_unreachable(settings, exc)}",
            file=err,
        )
        return NOT_DELIVERED
    if failed:
        print(
            f"kpi-monitor plans remove: the removal of {what} was not delivered: {failed[0]}; "
            "its plan stays in force on those partitions: run the remove again",
            file=err,
        )
        return NOT_DELIVERED
    print(f"removed the plan of {what}", file=out)
    return OK


class RefusedRecord(NamedTuple):
    partition: int
    offset: int
    key: bytes
    reason: str


class OnTopic(NamedTuple):
    plans: dict[bytes, Plan]  # by key, the plan in force
    refused: list[RefusedRecord]  # records refused that are their key's latest in a partition
    complete: bool  # every partition read to its end within the timeout


async def in_force(settings: Settings, timeout: float = 15.0) -> OnTopic:
    """The plans topic read to its end, folded as the workers fold it (``decode_plan_record``,
    per partition): a refused record leaves the plan before it in force, a tombstone removes
    it. Never raises on a record, whatever it holds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        group_id=None,
        enable_auto_commit=False,
        **aiokafka_kwargs(settings),
    )
    held: dict[int, dict[bytes, Plan]] = {}
    refused: dict[tuple[int, bytes], RefusedRecord] = {}
    complete = False
    try:
        await consumer.start()
        partitions = consumer.partitions_for_topic(settings.topics.plans) or set()
        tps = [TopicPartition(settings.topics.plans, p) for p in sorted(partitions)]
        if not tps:
            return OnTopic({}, [], True)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        deadline = time.monotonic() + timeout
        # The high watermark of the fetch responses, not ListOffsets: the embedded broker
        # answers ListOffsets short (shared notes).
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                plans = held.setdefault(tp.partition, {})
                for record in records:
                    _fold(plans, refused, tp.partition, record.offset, record.key, record.value)
            if await _at_end(consumer, tps):
                complete = True
                break
    finally:
        await consumer.stop()
    merged = {key: plan for _, plans in sorted(held.items()) for key, plan in plans.items()}
    return OnTopic(merged, sorted(refused.values()), complete)


def _fold(
    plans: dict[bytes, Plan],
    refused: dict[tuple[int, bytes], RefusedRecord],
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> None:
    """One record into its partition's plans: its key's latest record is either a plan, a
    tombstone, or refused (and the plan before it stays, as on the workers)."""
    decoded = _decoded(key, value)
    key = key or b""
    if isinstance(decoded, str):
        refused[partition, key] = RefusedRecord(partition, offset, key, decoded)
        return
    refused.pop((partition, key), None)
    if decoded[1] is None:
        plans.pop(key, None)
    else:
        plans[key] = decoded[1]


def _decoded(key: bytes | None, value: bytes | None) -> tuple[str, Plan | None] | str:
    """decode_plan_record, which never raises by contract; should a record find a way (a bug),
    the record is refused with the exception named, and the rest of the topic is shown."""
    try:
        return decode_plan_record(key, value)
    except Exception as exc:  # one hostile record must not hide every plan
        return f"internal error: {type(exc).__name__}: {str(exc)[:200]}"


async def _at_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    for tp in tps:
        mark = consumer.highwater(tp)
        if mark is None or await consumer.position(tp) < mark:
            return False
    return True


async def show(
    settings: Settings,
    campaign: str | None,
    *,
    as_json: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """The plans in force (one line each, or one JSON object each with ``as_json``), then the
    refused records (partition, offset, key, reason: on stdout, or on stderr with ``as_json``
    so that stdout stays JSON). 0, or 1 when ``campaign`` has no plan of its own, 2 without a
    broker, 3 when the topic could not be read to its end."""
    if settings.broker is None:
        print("kpi-monitor plans show: set KPI_BROKER or --broker", file=err)
        return NOTHING_DONE
    try:
        topic = await in_force(settings)
    except KafkaError as exc:
        print(f"kpi-monitor plans show: {_unreachable(settings, exc)}", file=err)
        return NOT_DELIVERED
    chosen = sorted(topic.plans.items())
    refused = topic.refused
    if campaign is not None:
        chosen = [(k, v) for k, v in chosen if k == campaign.encode()]
        refused = [r for r in refused if r.key == campaign.encode()]
    for _, plan in chosen:
        print(orjson.dumps(plan.to_json()).decode() if as_json else describe(plan), file=out)
    for line in _refused_lines(refused):
        print(line, file=err if as_json else out)
    if not topic.complete:
        print(
            f"kpi-monitor plans show: {settings.topics.plans} was not read to its end in time: "
            "the plans above may be short; try again",
            file=err,
        )
        return NOT_DELIVERED
    if campaign is not None and not chosen:
        print(f"{campaign}: no plan of its own (its channel's default applies)", file=out)
        return REFUSED_ROWS
    return OK


def _refused_lines(refused: list[RefusedRecord]) -> list[str]:
    """One line per key and reason, with every partition:offset it was seen at (the loader
    writes each plan to every partition)."""
    places: dict[tuple[bytes, str], list[str]] = {}
    for record in refused:
        places.setdefault((record.key, record.reason), []).append(
            f"{record.partition}:{record.offset}"
        )
    return [
        f"{_printable(key.decode(errors='replace')) or '(no key)'}: record refused at "
        f"partition:offset {', '.join(at)}: {_printable(reason)}"
        for (key, reason), at in places.items()
    ]


def _printable(text: str, limit: int = 200) -> str:
    """Text from the topic, safe on a terminal: control characters escaped, cut short. A channel
    default's key starts with a NUL (``channel_key``), shown without it."""
    text = text.removeprefix("\x00")
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def describe(plan: Plan) -> str:
    """One line a marketer reads: whose plan, targets, budgets, flight, zone, labels."""
    parts = [plan.campaign if plan.campaign is not None else f"channel:{plan.channel} (default)"]
    parts += [f"{kpi}={value:g}" for kpi, value in sorted(plan.targets.items())]
    parts += [f"{period} budget={value:g}" for period, value in sorted(plan.budgets.items())]
    if plan.flight_start or plan.flight_end:
        parts.append(f"flight {plan.flight_start or '...'} to {plan.flight_end or '...'}")
    if plan.timezone:
        parts.append(plan.timezone)
    parts += [f"{name}={value}" for name, value in sorted(plan.labels.items())]
    return "  ".join(parts)


def _producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        acks="all",
        linger_ms=5,
        **aiokafka_kwargs(settings),
    )
