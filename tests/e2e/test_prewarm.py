"""A restart's head start against the real broker (agents.prewarm): the changelog's records after
the local file's offset, for the partitions last owned, are written into the file before the
states are built; a partition not owned last is left to Faust's recovery."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.broker import EmbeddedBroker
from agents.local_store import Identity, LocalRecords, record_digest
from agents.prewarm import Prewarm
from stream.settings import Settings

pytestmark = pytest.mark.e2e
TOPIC = "prewarm-kpi-state-changelog"
IDENTITY = Identity(TOPIC, "prewarm", 4)


async def changelog(bootstrap: str, records: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 3, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, items in records.items():
            for key, value in items:  # one at a time: several batches, as a worker writes
                await producer.send_and_wait(TOPIC, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_the_changelogs_tail_reaches_the_file_before_the_build(tmp_path):
    log = {
        0: [(b"a", b"1"), (b"b", b"1"), (b"a", b"2"), (b"c", b"1"), (b"b", None), (b"a", b"3")],
        1: [(b"x", b"1"), (b"y", b"1")],
        2: [(b"p", b"1"), (b"p", b"2")],
    }
    built: list = []

    def build(partitions, records):
        built.append((sorted(partitions), sorted(records)))
        return {}

    with EmbeddedBroker() as broker:
        asyncio.run(changelog(broker.bootstrap, log))
        path = tmp_path / "state.sqlite"
        local = LocalRecords(path, IDENTITY)
        # The file: partition 0 complete to offset 1 (a crash lost the rest), 1 whole, 2 not
        # owned last (a standby copy at offset 0).
        for partition, complete_to in ((0, 1), (1, 1), (2, 0)):
            items = log[partition][: complete_to + 1]
            key, value = items[-1]
            local.apply(TOPIC, partition, items, complete_to, record_digest(key, value))
        local.set_owned([0, 1])
        local.close()
        prewarm = Prewarm(path, IDENTITY, build, Settings(broker=broker.url)).start()
        assert prewarm.wait(30)
    assert prewarm.tail_records == 4
    local = LocalRecords(path, IDENTITY)
    assert local.offset(TOPIC, 0) == (5, record_digest(b"a", b"3"))
    assert sorted(local.records([0])) == [(b"a", b"3"), (b"c", b"1")]
    assert local.offset(TOPIC, 2)[0] == 0  # not owned last: Faust's recovery reads it
    assert built == [([0, 1], [(b"a", b"3"), (b"c", b"1"), (b"x", b"1"), (b"y", b"1")])]
