"""The local store (agents.local_store): a restore from its file plus the changelog's tail is the
restore from the whole changelog, at any point the file was complete to; the worker's writes reach
it only once acknowledged, in order; a file that the changelog does not continue is not used."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.app import create_app
from agents.local_store import Identity, LocalRecords, record_digest
from stream.codec import decode_key
from stream.settings import Settings
from tests.agents.test_app import deliver, until
from tests.factories import NOW_MS, event, raw
from tests.state_harness import as_messages, canonical, restore, run
from tests.stream.test_state import payload_lists

TOPIC = "app-kpi-state-changelog"
IDENTITY = Identity(TOPIC, "app", 4)


def offsets(log: list) -> list[tuple[int, bytes, bytes | None]]:
    return [(offset, key, value) for offset, (key, value) in enumerate(log)]


@settings(max_examples=40, deadline=None)
@given(payload_lists(max_age_ms=2 * 86_400_000), st.data())
def test_the_file_plus_the_tail_restores_what_the_whole_changelog_restores(
    tmp_path_factory, payloads, data
):
    _, log = run(as_messages(payloads))
    if not log:
        return
    written = offsets(log)
    # The file complete to some offset, written in acknowledged chunks of any size.
    complete_to = data.draw(st.integers(-1, len(written) - 1))
    local = LocalRecords(tmp_path_factory.mktemp("local") / "state.sqlite", IDENTITY)
    start = 0
    while start <= complete_to:
        end = min(complete_to + 1, start + data.draw(st.integers(1, 9)))
        chunk = written[start:end]
        last = chunk[-1]
        local.apply(
            TOPIC, 0, [(k, v) for _, k, v in chunk], last[0], record_digest(last[1], last[2])
        )
        start = end
    found = local.offset(TOPIC, 0)
    assert (found[0] if found else -1) == complete_to
    # Recovery: the tail after the file's offset, applied over the file (as the store does).
    tail = written[complete_to + 1 :]
    last = tail[-1] if tail else None
    if last is not None:
        local.apply(TOPIC, 0, [(k, v) for _, k, v in tail], last[0], None)
    restored = local.records([0])
    state = restore(restored)
    assert canonical(state) == canonical(restore(log))
    local.close()


@settings(max_examples=60, deadline=None)
@given(payload_lists(max_age_ms=2 * 86_400_000), st.data())
def test_a_run_written_again_after_newer_records_changes_nothing(tmp_path_factory, payloads, data):
    """A worker's own writes acknowledged late, after a standby's recovery wrote the next owner's
    newer records of the partition: the file keeps the newer values and its offset."""
    _, log = run(as_messages(payloads))
    if not log:
        return
    written = offsets(log)
    local = LocalRecords(tmp_path_factory.mktemp("local") / "state.sqlite", IDENTITY)
    last = written[-1]
    local.apply(TOPIC, 0, [(k, v) for _, k, v in written], last[0], record_digest(*last[1:]))
    start = data.draw(st.integers(0, len(written) - 1))
    end = data.draw(st.integers(start, len(written) - 1))
    late = written[start : end + 1]
    local.apply(TOPIC, 0, [(k, v) for _, k, v in late], late[-1][0], None)
    assert local.offset(TOPIC, 0) == (last[0], record_digest(*last[1:]))
    assert canonical(restore(local.records([0]))) == canonical(restore(log))
    local.close()


def test_records_and_offsets_survive_a_reopen_and_a_corrupt_file_is_set_aside(tmp_path):
    path = tmp_path / "state.sqlite"
    local = LocalRecords(path, IDENTITY)
    local.apply(TOPIC, 3, [(b"k1", b"v1"), (b"k2", b"v2"), (b"k1", None)], 41, b"d")
    local.close()
    again = LocalRecords(path, IDENTITY)
    assert again.offset(TOPIC, 3) == (41, b"d")
    assert again.partitions(TOPIC) == {3: (41, b"d")}
    again.drop(TOPIC, 3)
    assert again.offset(TOPIC, 3) is None
    again.close()
    path.write_bytes(b"not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"state.sqlite{suffix}").unlink(missing_ok=True)
    fresh = LocalRecords(path, IDENTITY)
    assert fresh.partitions(TOPIC) == {}
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    fresh.close()


def test_a_failed_write_is_never_half_applied(tmp_path):
    local = LocalRecords(tmp_path / "state.sqlite", IDENTITY)
    local.apply(TOPIC, 0, [(b"a", b"1")], 0, None)
    with pytest.raises(sqlite3.Error):
        local.apply(TOPIC, 0, [(b"b", b"2"), (None, b"3")], 2, None)  # type: ignore[list-item]
    assert local.records([0]) == [(b"a", b"1")]
    assert local.offset(TOPIC, 0) == (0, None)
    local.close()


# -- the worker's writes, mirrored once acknowledged ---------------------------------------------


async def mirrored_all(monitor) -> None:
    """Once every acknowledged write is queued and the writer thread has written the queue."""
    await monitor.table._mirrored
    await asyncio.wrap_future(monitor.table.data.writer.submit(lambda: None))


@pytest.fixture
def mirrored(tmp_path):
    settings_ = Settings(broker="kafka://127.0.0.1:9", web_port=16198, data_dir=str(tmp_path))
    monitor = create_app(settings_, clock=lambda: NOW_MS, registry=CollectorRegistry())
    monitor.pipeline.assign(range(settings_.partitions), [])
    monitor.changelog = []
    monitor.acks = []  # futures for the "broker" to resolve (or fail)
    next_offset: dict[int, int] = {}

    monitor.auto_ack = True  # False: the test resolves (or fails) each write's ack itself
    monitor.cold_reads = []  # partitions read from the "changelog" whole (``cold_reader``)

    async def sink(topic, partition, items):
        monitor.changelog.append((topic, partition, items))
        first = next_offset.get(partition, 0)
        next_offset[partition] = first + len(items)
        ack = asyncio.get_running_loop().create_future()
        monitor.acks.append((ack, first + len(items) - 1))
        if monitor.auto_ack:
            ack.set_result(first + len(items) - 1)
        return [ack]

    async def cold_reader(topic, partitions):
        monitor.cold_reads.append(sorted(partitions))
        latest = {}
        for _, partition, items in monitor.changelog:
            if partition in partitions:
                latest.update(items)
        return [(k, v) for k, v in latest.items() if v is not None]

    monitor.refusals = []

    async def refused(exc):
        monitor.refusals.append(exc)

    monitor.table.changelog_sink = sink
    monitor.table.cold_reader = cold_reader
    monitor.table.tail_reader = None  # no broker: the file's tail is not read at hand-overs
    monitor.table.on_refused = refused
    return monitor, settings_


async def test_writes_reach_the_file_once_acknowledged_and_restore_the_live_state(mirrored):
    monitor, settings_ = mirrored
    store = monitor.table.data
    topics = settings_.topics
    monitor.auto_ack = False
    async with monitor.app.agents["ingest"].test_context() as agent:
        await deliver(agent, topics.clicks, 0, 0, raw(event("click", at_ms=NOW_MS)))
        await until(lambda: monitor.pipeline.states[0].meta.checkpoint[1] == 0)
        assert store.take_records({0}) == ([], set())  # not acknowledged: not in the file
        for ack, last in monitor.acks:
            ack.set_result(last)
        monitor.auto_ack = True
        for offset in (1, 2):
            await deliver(
                agent, topics.clicks, 0, offset, raw(event("click", at_ms=NOW_MS - offset))
            )
        await until(lambda: monitor.pipeline.states[0].meta.checkpoint[1] == 2)
    await mirrored_all(monitor)
    records, cold = store.take_records({0})
    live = canonical(monitor.pipeline.states[0])
    state = restore(records, monitor.pipeline.config)
    assert canonical(state) == live and cold == set()
    assert {decode_key(k)[0] for k, _ in records} == {0}


async def test_a_refused_changelog_batch_stops_every_later_write_and_every_commit(mirrored):
    """The broker refuses a batch: the partition leaves the file (read whole at its next
    hand-over), nothing more is sent (a later batch's checkpoint would make a restore skip the
    refused one), no input offset is committed past it, and the worker is told to stop."""
    monitor, settings_ = mirrored
    store, table = monitor.table.data, monitor.table
    topics = settings_.topics
    monitor.auto_ack = False
    async with monitor.app.agents["ingest"].test_context() as agent:
        await deliver(agent, topics.clicks, 0, 0, raw(event("click")))
        await until(lambda: monitor.pipeline.states[0].meta.checkpoint[1] == 0)
        monitor.acks[0][0].set_exception(RuntimeError("refused"))
        await mirrored_all(monitor)
        assert isinstance(table.refused, RuntimeError)
        assert not await table.acknowledged()  # the commit gate (KpiConsumer._commit_offsets)
        await until(lambda: monitor.refusals)  # the worker stops
        sent = len(monitor.changelog)
        with pytest.raises(Exception, match="refused"):
            await table.write([(monitor.changelog[0][2][0][0], b"later")])
        assert len(monitor.changelog) == sent  # nothing more reached the changelog
    topic = table.changelog_topic.get_topic_name()
    assert store.local.offset(topic, 0) is None  # the next restore reads the whole changelog
    assert store.take_records({0}) == ([], {0})  # and this process reads it whole too


async def test_mirrored_writes_run_off_the_event_loop_and_in_write_order(mirrored, monkeypatch):
    monitor, settings_ = mirrored
    store = monitor.table.data
    topics = settings_.topics
    applied: list[tuple[str, int]] = []  # (thread, last offset)
    real_apply = store.local.apply

    def apply(topic, partition, items, last_offset, digest, continues=None):
        applied.append((threading.current_thread().name, last_offset))
        return real_apply(topic, partition, items, last_offset, digest, continues=continues)

    monkeypatch.setattr(store.local, "apply", apply)
    async with monitor.app.agents["ingest"].test_context() as agent:
        for offset in range(6):
            await deliver(
                agent, topics.clicks, 0, offset, raw(event("click", at_ms=NOW_MS - offset))
            )
            await until(lambda o=offset: monitor.pipeline.states[0].meta.checkpoint[1] == o)
    await mirrored_all(monitor)
    loop_thread = threading.current_thread().name
    assert len(applied) == len(monitor.acks) >= 6
    assert all(thread != loop_thread for thread, _ in applied)
    assert [last for _, last in applied] == sorted(last for _, last in applied)
    records, cold = store.take_records({0})
    assert not cold
    assert canonical(restore(records, monitor.pipeline.config)) == canonical(
        monitor.pipeline.states[0]
    )


def _changelog_events(topic: str, partition: int, records: list[tuple[bytes, bytes | None]]):
    return [
        SimpleNamespace(
            message=SimpleNamespace(
                topic=topic, partition=partition, offset=offset, key=key, value=value
            )
        )
        for offset, (key, value) in enumerate(records)
    ]


async def test_recovery_batches_are_written_off_the_loop_before_a_hand_over_reads_them(
    mirrored, monkeypatch
):
    monitor, _ = mirrored
    store, table = monitor.table.data, monitor.table
    topic = table.changelog_topic.get_topic_name()
    threads: list[str] = []
    real_apply = store.local.apply

    def apply(*args, **kwargs):
        threads.append(threading.current_thread().name)
        time.sleep(0.05)  # a slow disk: the hand-over must still see the batch
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(store.local, "apply", apply)
    records = [(b"\x00k%d" % i, b"v%d" % i) for i in range(5)] + [(b"\x00k1", None)]
    store.apply_changelog_batch(_changelog_events(topic, 2, records), None, None)
    taken = dict(await table.take_records({2}))
    assert threads and threading.current_thread().name not in threads
    assert taken == {b"\x00k%d" % i: b"v%d" % i for i in (0, 2, 3, 4)}
    assert store.persisted_offset(TP(topic, 2)) == len(records) - 1


async def test_a_partition_the_file_cannot_give_is_read_from_the_changelog_whole(
    mirrored, monkeypatch
):
    """A recovery batch the file could not take (a full disk, say): the file is a cache, so the
    store goes on without it and the hand-over reads the changelog whole; never a stop."""
    monitor, _ = mirrored
    store, table = monitor.table.data, monitor.table
    topic = table.changelog_topic.get_topic_name()
    monitor.changelog.append((topic, 1, [(b"\x00a", b"1"), (b"\x00b", b"2")]))  # the log
    store.apply_changelog_batch(_changelog_events(topic, 1, [(b"\x00a", b"1")]), None, None)
    assert await table.take_records({1}) == [(b"\x00a", b"1")]

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store.local, "apply", full)
    store.apply_changelog_batch(_changelog_events(topic, 1, [(b"\x00b", b"2")]), None, None)
    taken = await table.take_records({1})
    assert sorted(taken) == [(b"\x00a", b"1"), (b"\x00b", b"2")]  # the changelog's, whole
    assert monitor.cold_reads == [[1]]
    assert store.disabled and store.fallbacks == {"unwritable": 1}
    assert store.persisted_offset(TP(topic, 1)) is None  # and the next start reads it whole
    assert table.restored["read_from_changelog"] >= 2


async def test_a_partition_whose_write_was_not_acknowledged_is_read_whole_here(mirrored):
    monitor, _ = mirrored
    store, table = monitor.table.data, monitor.table
    topic = table.changelog_topic.get_topic_name()
    store.apply_changelog_batch(_changelog_events(topic, 3, [(b"\x00a", b"1")]), None, None)
    await asyncio.wrap_future(store.forget(topic, 3, "not acknowledged"))
    # Recovery resumes where it read last, not at 0: a write now would leave a gap before it.
    store.apply_changelog_batch(_changelog_events(topic, 3, [(b"\x00b", b"2")]), None, None)
    assert await table.take_records({0}) == []
    assert await table.take_records({3}) == []  # read from the (empty, here) changelog
    assert monitor.cold_reads == [[3]]
    assert store.persisted_offset(TP(topic, 3)) is None


async def test_writes_wait_while_the_file_is_too_far_behind(mirrored, monkeypatch):
    monitor, _ = mirrored
    store, table = monitor.table.data, monitor.table
    topic = table.changelog_topic.get_topic_name()
    gate = threading.Event()
    real_apply = store.local.apply

    def apply(*args, **kwargs):
        gate.wait(5)  # a slow disk
        return real_apply(*args, **kwargs)

    monkeypatch.setattr(store.local, "apply", apply)
    records = [(b"\x00k%d" % i, b"v") for i in range(30)]
    store.apply_changelog_batch(_changelog_events(topic, 1, records), None, None)
    assert store.queued == 30
    waiting = asyncio.ensure_future(store.wait_for_room(limit=10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    gate.set()
    await asyncio.wait_for(waiting, 5)
    assert store.queued == 0
    await asyncio.wait_for(store.wait_for_room(limit=10), 1)  # under the limit: at once


# -- two connections: the store's and a restart's head start (agents.prewarm) ----------------


def test_a_run_that_continues_a_dropped_partition_is_refused(tmp_path):
    local = LocalRecords(tmp_path / "state.sqlite", IDENTITY)
    local.apply(TOPIC, 0, [(b"\x00a", b"1"), (b"\x00b", b"1")], 1, None)
    assert local.apply(TOPIC, 0, [(b"\x00c", b"1")], 2, None, continues=1)
    local.drop(TOPIC, 0)  # a failed write elsewhere: the next start reads it whole
    assert not local.apply(TOPIC, 0, [(b"\x00d", b"1")], 5, None, continues=2)
    assert local.offset(TOPIC, 0) is None and local.records([0]) == []
    local.apply(TOPIC, 0, [(b"\x00a", b"2")], 1, None)  # recovery starts it again from 0
    assert not local.apply(TOPIC, 0, [(b"\x00d", b"1")], 5, None, continues=2)  # still a gap


def test_the_offset_is_checked_under_the_write_lock(tmp_path):
    path = tmp_path / "state.sqlite"
    store, other = LocalRecords(path, IDENTITY), LocalRecords(path, IDENTITY)
    store.apply(TOPIC, 0, [(b"\x00a", b"1")], 5, None)
    other.db.execute("BEGIN IMMEDIATE")  # the other connection is writing newer records
    late = threading.Thread(target=store.apply, args=(TOPIC, 0, [(b"\x00a", b"old")], 8, None))
    late.start()
    time.sleep(0.3)  # the late run has read the offset by now, if it reads it outside the lock
    other.db.execute("INSERT OR REPLACE INTO records VALUES (?, 0, ?)", (b"\x00a", b"new"))
    other.db.execute("INSERT OR REPLACE INTO offsets VALUES (?, 0, 10, NULL)", (TOPIC,))
    other.db.execute("COMMIT")
    late.join(10)
    assert store.offset(TOPIC, 0)[0] == 10
    assert store.records([0]) == [(b"\x00a", b"new")]


def test_a_failed_bookkeeping_write_leaves_no_transaction_open(tmp_path):
    path = tmp_path / "state.sqlite"
    store, other = LocalRecords(path, IDENTITY), LocalRecords(path, IDENTITY)
    store.db.execute("PRAGMA busy_timeout = 50")
    other.db.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError):  # locked: refused before it began
        store.set_owned([0, 1])
    other.db.execute("COMMIT")
    with pytest.raises(sqlite3.IntegrityError):  # fails inside its transaction
        store.set_owned([0, 0])
    store.apply(TOPIC, 0, [(b"\x00a", b"1")], 0, None)  # the connection still writes
    store.set_owned([0])
    assert store.owned_offsets(TOPIC) == {0: 0}


async def test_a_batch_refused_inside_a_write_of_several_latches_too(mirrored):
    """A write of one partition larger than a producer batch: the sink waits for each batch
    before the next, and raises when one is refused. That refusal latches as one seen later
    does: nothing more is written, the commit gate says no, the worker is told to stop."""
    monitor, _ = mirrored
    table = monitor.table

    async def refusing(topic, partition, items):
        raise RuntimeError("MessageSizeTooLarge (batch 0)")

    table.changelog_sink = refusing
    with pytest.raises(Exception, match="MessageSizeTooLarge"):
        await table.write([(b'[0,"k","c1"]', b"v")])
    assert table.refused is not None
    assert not await table.acknowledged()
    await until(lambda: monitor.refusals)
    with pytest.raises(Exception, match="refused"):
        await table.write([(b'[0,"k","c3"]', b"later")])
