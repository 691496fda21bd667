"""``kpi-monitor plans`` against a real embedded broker that refuses records, and a plans topic
holding hostile records: load and remove report every record the broker did not take and exit
3; show lists refused records and goes on.

How the broker refuses: Tansu validates produced records against a JSON schema named after the
topic in its schema registry (``--schema-registry``) and answers a record that does not match
with an error (aiokafka sees ``UnknownError``), failing the record's whole batch. Measured on
this broker: a value over the topic's ``max.message.bytes`` (200 bytes, and 120 MB) is taken; a
produce to a deleted topic re-creates it and is taken; a partition the metadata does not list is
refused by aiokafka before it is sent. The schema is the one real refusal found.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.broker import EmbeddedBroker, free_port
from stream.settings import Topics
from tests.e2e.harness import ROOT, guarded_broker

pytestmark = pytest.mark.e2e
PLANS = Topics().plans
PARTITIONS = 4
# A plan whose campaign_id starts with "blocked" is not an object the schema accepts, and
# neither is a tombstone (a null value).
GUARD = {
    "type": "object",
    "properties": {
        "value": {
            "type": "object",
            "properties": {"campaign_id": {"type": "string", "not": {"pattern": "^blocked"}}},
        }
    },
}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", "plans", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, KPI_PARTITIONS=str(PARTITIONS)),
    )


async def partitions_by_key(bootstrap: str) -> dict[bytes, set[int]]:
    """The plans topic read to its end (the fetch high watermark): the partitions each key has a
    record in."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(PLANS, p) for p in sorted(consumer.partitions_for_topic(PLANS))]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        found: dict[bytes, set[int]] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                for record in records:
                    found.setdefault(record.key, set()).add(tp.partition)
            marks = [consumer.highwater(tp) for tp in tps]
            positions = [await consumer.position(tp) for tp in tps]
            if None not in marks and all(p >= m for p, m in zip(positions, marks)):
                return found
        raise AssertionError("the plans topic was not read to its end in 30 s")
    finally:
        await consumer.stop()


def test_load_names_every_row_the_broker_refused_and_counts_only_delivered_rows(tmp_path):
    """2,000 rows, three of them refused by the broker (each fails the batch it shares with ~100
    good rows): the three are named with their lines and the broker's error, the good rows are
    on every partition all the same, the summary counts the delivered rows only, exit 3."""
    names = [f"camp-{i:04d}" for i in range(2000)]
    for at in (10, 900, 1999):
        names[at] = f"blocked-{at}"
    rows = [f"{name},{i % 90 + 1},0.01," for i, name in enumerate(names)]
    rows[500] = "bad-ctr,10,2%,"  # refused by validation, never sent
    rows.append(",,0.002,display")  # a channel default
    path = tmp_path / "plans.csv"
    path.write_text("campaign_id,target_cpa,target_ctr,channel\n" + "\n".join(rows) + "\n")

    with guarded_broker(tmp_path, {PLANS: GUARD}) as url:
        loaded = cli("load", str(path), "--broker", url)
        on_topic = asyncio.run(partitions_by_key(url.removeprefix("kafka://")))

    assert loaded.returncode == 3, loaded.stderr
    assert f"{path}:502: targets.ctr must be a number" in loaded.stderr  # header is line 1
    named = re.findall(
        rf"^{re.escape(str(path))}:(\d+): (campaign|channel) (\S+) not delivered: (.*)$",
        loaded.stderr,
        re.M,
    )
    assert [(int(line), name) for line, _, name, _ in named] == [
        (at + 2, f"blocked-{at}") for at in (10, 900, 1999)
    ]
    assert {why for *_, why in named} == {"partitions 0, 1, 2, 3 of 4: [Error -1] UnknownError"}
    # What was said is what is on the topic: every other row on every partition, these on none.
    valid = [name.encode() for i, name in enumerate(names) if i != 500]
    complete = {key for key, parts in on_topic.items() if len(parts) == PARTITIONS}
    assert {key for key in valid if key not in complete} == {n.encode() for *_, n, _ in named}
    assert not any(key.startswith(b"blocked") for key in on_topic)
    assert b"\x00channel:display" in complete
    campaigns = len(complete) - 1
    assert (
        f"published {path}: {campaigns} campaign plans and 1 channel defaults; 1 rows refused; "
        f"{len(named)} rows not delivered"
    ) in loaded.stdout
    assert "3 rows not delivered (named above)" in loaded.stderr


def test_remove_says_so_when_the_broker_refuses_the_tombstone(tmp_path):
    path = tmp_path / "plans.jsonl"
    path.write_text('{"campaign_id": "autumn", "targets": {"cpa": 25}}\n')
    with guarded_broker(tmp_path, {PLANS: GUARD}) as url:
        assert cli("load", str(path), "--broker", url).returncode == 0
        removed = cli("remove", "autumn", "--broker", url)
        shown = cli("show", "autumn", "--broker", url)
    assert removed.returncode == 3
    assert "the removal of autumn was not delivered: partitions 0, 1, 2, 3 of 4" in removed.stderr
    assert "removed" not in removed.stdout
    assert shown.returncode == 0 and "autumn  cpa=25" in shown.stdout


def test_load_and_remove_without_a_reachable_broker_publish_nothing_and_say_so(tmp_path):
    path = tmp_path / "plans.csv"
    path.write_text("campaign_id,target_cpa\na,1\n")
    nowhere = f"kafka://127.0.0.1:{free_port()}"
    loaded = cli("load", str(path), "--broker", nowhere)
    removed = cli("remove", "a", "--broker", nowhere)
    for result in (loaded, removed):
        assert result.returncode == 3 and "Traceback" not in result.stderr
        assert f"the broker at {nowhere} could not be used (KafkaConnectionError" in result.stderr
    assert "nothing published" in loaded.stderr and "published" not in loaded.stdout


GOOD = {"campaign_id": "spring-sale", "targets": {"cpa": 40}}
HOSTILE = [  # (key, value), in order, to partition 0
    (b"spring-sale", orjson.dumps(GOOD)),
    (b"junk", b"{not json"),
    (b"zone", orjson.dumps({"campaign_id": "zone", "timezone": "Europe"})),  # a directory
    (b"big", b'{"campaign_id": "big", "budget": {"daily": ' + b"1" * 400 + b"}}"),
    (b"other", orjson.dumps({"campaign_id": "x"})),
    (None, orjson.dumps({"campaign_id": "keyless"})),
    (b"\xff\xfe", orjson.dumps({"campaign_id": "bytes"})),
    (b"\x1b[31mred", b"[]"),
    (b"deep", b"[" * 5000 + b"]" * 5000),
    (b"spring-sale", orjson.dumps({"campaign_id": "spring-sale", "targets": {"cpa": -1}})),
    (None, b"{}"),  # keyless again
]


async def produce_raw(bootstrap: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(PLANS, value, key=key, partition=0)
    finally:
        await producer.stop()


def test_show_lists_hostile_records_as_refused_and_goes_on():
    with EmbeddedBroker() as broker:
        asyncio.run(produce_raw(broker.bootstrap, HOSTILE))
        shown = cli("show", "--broker", broker.url)
        as_json = cli("show", "--json", "--broker", broker.url)
        one = cli("show", "spring-sale", "--broker", broker.url)

    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    # The latest spring-sale record is refused: the plan before it stays in force, as on the
    # workers, and the refused record is listed.
    assert lines[0] == "spring-sale  cpa=40"
    refused = "\n".join(lines[1:])
    for expected in (
        "junk: record refused at partition:offset 0:1: not JSON",
        "zone: record refused at partition:offset 0:2: timezone 'Europe'",  # was a crash
        "big: record refused at partition:offset 0:3: not JSON",
        "other: record refused at partition:offset 0:4: the key is not the plan's",
        "\ufffd\ufffd: record refused at partition:offset 0:6: the key is not UTF-8",
        "\\x1b[31mred: record refused at partition:offset 0:7: a plan is a JSON object",
        "deep: record refused at partition:offset 0:8: not JSON",
        "spring-sale: record refused at partition:offset 0:9: targets.cpa must be",
        # A key's latest record only: offset 10, not the keyless plan at 5.
        "(no key): record refused at partition:offset 0:10: a plan record needs a key",
    ):
        assert expected in refused, refused
    assert "\x1b" not in shown.stdout and len(lines) == 10

    assert as_json.returncode == 0
    assert [orjson.loads(line) for line in as_json.stdout.splitlines()] == [
        {"schema": 1, **GOOD, "targets": {"cpa": 40.0}}
    ]
    assert "junk: record refused" in as_json.stderr
    assert one.returncode == 0 and one.stdout.splitlines()[0] == "spring-sale  cpa=40"
    assert "0:9: targets.cpa" in one.stdout and "junk" not in one.stdout


def test_a_record_that_makes_decoding_raise_is_refused_not_a_crash(monkeypatch):
    """The safety net of show, without a broker: should decode_plan_record ever raise (a bug),
    the record is refused naming the exception and the plans before it stay."""
    from agents import plans_cli

    plans: dict = {}
    refused: dict = {}
    plans_cli._fold(plans, refused, 0, 0, b"a", orjson.dumps({"campaign_id": "a"}))

    def broken(key, value):
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(plans_cli, "decode_plan_record", broken)
    plans_cli._fold(plans, refused, 0, 1, b"a", b"{}")
    assert list(plans) == [b"a"]
    assert refused[0, b"a"].reason == (
        "internal error: OverflowError: int too large to convert to float"
    )
