"""A restart's head start (agents.prewarm): the states of the partitions last owned, built from the
local file while the worker joins its group, are taken at the hand-over only where the file has
not moved since, and are then the states a rebuild from the file makes."""

from __future__ import annotations

import asyncio
import threading

from faust.types import TP

from agents.local_store import Identity, LocalRecords
from agents.prewarm import Prewarm
from stream.state import PartitionState
from tests.agents.test_app import deliver, until
from tests.agents.test_local_store import mirrored, mirrored_all  # noqa: F401 (fixture)
from tests.factories import NOW_MS, event, raw
from tests.state_harness import canonical, restore

T = Identity("t", "app", 4)  # a file of the changelog "t"


async def fold_and_acknowledge(monitor, settings_, partition: int, offsets: range) -> None:
    async with monitor.app.agents["ingest"].test_context() as agent:
        for offset in offsets:
            at = NOW_MS - offset
            await deliver(
                agent, settings_.topics.clicks, partition, offset, raw(event("click", at_ms=at))
            )
        last = offsets[-1]
        await until(lambda: monitor.pipeline.states[partition].meta.checkpoint[1] == last)
    for ack, acknowledged in monitor.acks:
        if not ack.done():
            ack.set_result(acknowledged)
    await mirrored_all(monitor)


async def test_only_partitions_the_file_has_not_moved_on_are_taken_as_built(mirrored):  # noqa: F811
    monitor, settings_ = mirrored
    store, table = monitor.table.data, monitor.table
    topic = table.changelog_topic.get_topic_name()
    for partition in (0, 1):
        await fold_and_acknowledge(monitor, settings_, partition, range(3))
    await asyncio.wrap_future(store.note_owned({0, 1}))
    prewarm = Prewarm(store.local.path, store.local.identity, monitor.pipeline.build).start()
    assert await asyncio.to_thread(prewarm.wait, 10)
    assert prewarm.built() == [0, 1]
    # After the build, partition 1's file moves on (as recovery writing the changelog's tail).
    await fold_and_acknowledge(monitor, settings_, 1, range(3, 5))
    offsets = store.offsets(topic, {0, 1, 2})
    taken = prewarm.take({0, 1, 2}, offsets)
    assert sorted(taken) == [0]
    config = monitor.pipeline.config
    assert canonical(taken[0]) == canonical(restore(store.take_records({0})[0], config))
    assert prewarm.take({0, 1, 2}, offsets) == {}  # once


async def test_a_partial_first_assignment_leaves_the_rest_to_the_next_hand_over_only(mirrored):  # noqa: F811
    monitor, settings_ = mirrored
    store, table = monitor.table.data, monitor.table
    topic = table.changelog_topic.get_topic_name()
    for partition in (0, 1, 2):
        await fold_and_acknowledge(monitor, settings_, partition, range(2))
    await asyncio.wrap_future(store.note_owned({0, 1, 2}))
    prewarm = Prewarm(store.local.path, store.local.identity, monitor.pipeline.build).start()
    assert await asyncio.to_thread(prewarm.wait, 10)
    assert sorted(prewarm.take({0}, store.offsets(topic, {0}))) == [0]
    assert sorted(prewarm.take({1}, store.offsets(topic, {1}))) == [1]
    assert prewarm.take({2}, store.offsets(topic, {2})) == {}  # dropped after the second


async def test_a_file_without_owned_partitions_builds_nothing(mirrored):  # noqa: F811
    monitor, settings_ = mirrored
    store = monitor.table.data
    await fold_and_acknowledge(monitor, settings_, 0, range(2))
    prewarm = Prewarm(store.local.path, store.local.identity, monitor.pipeline.build).start()
    assert await asyncio.to_thread(prewarm.wait, 10)
    assert prewarm.built() == []
    await asyncio.wrap_future(store.note_owned({1}))  # owned, but the file holds none of it
    prewarm = Prewarm(store.local.path, store.local.identity, monitor.pipeline.build).start()
    assert await asyncio.to_thread(prewarm.wait, 10)
    assert prewarm.built() == []


def test_a_missing_file_is_no_head_start(tmp_path):
    prewarm = Prewarm(tmp_path / "none.sqlite", T, lambda partitions, records: {}).start()
    assert prewarm.wait(1) and prewarm.take({0}, {0: 5}) == {}


def test_assign_takes_built_states_as_they_are_and_rebuilds_the_rest(mirrored):  # noqa: F811
    monitor, _ = mirrored
    pipeline = monitor.pipeline
    built = {1: PartitionState(1, pipeline.config), 7: PartitionState(7, pipeline.config)}
    pipeline.assign({0, 1, 2}, [], built=built)
    assert pipeline.states[1] is built[1]  # 7 is not assigned: dropped
    assert sorted(pipeline.states) == [0, 1, 2] and pipeline.states[0] is not built.get(0)


def test_an_abandoned_head_start_keeps_nothing_it_builds_later(tmp_path):
    release = threading.Event()

    def slow_build(partitions, records):
        release.wait(5)
        return {0: PartitionState(0, None)}

    local = LocalRecords(tmp_path / "state.sqlite", T)
    local.apply("t", 0, [(b"\x00k", b"v")], 0, None)
    local.set_owned([0])
    local.close()
    prewarm = Prewarm(tmp_path / "state.sqlite", T, slow_build).start()
    assert not prewarm.wait(0.05)
    prewarm.abandon()
    release.set()
    assert prewarm.wait(5) and prewarm.take({0}, {0: 0}) == {}


async def test_a_hand_over_takes_the_built_states_the_file_still_matches(mirrored, monkeypatch):  # noqa: F811
    """The hand-over's path (agents.app): the built state is served as it is where the file has
    not moved; a partition that moved, or that the store could not write, is not taken from it."""
    monitor, settings_ = mirrored
    store, table, pipeline = monitor.table.data, monitor.table, monitor.pipeline
    for partition in (0, 1, 2):
        await fold_and_acknowledge(monitor, settings_, partition, range(2))
    await asyncio.wrap_future(store.note_owned({0, 1, 2}))
    prewarm = monitor.prewarm
    prewarm.settings = None  # no broker here: the file only
    prewarm.start()
    assert await asyncio.to_thread(prewarm.wait, 10)
    built = {p: state for p, (_, state) in prewarm._states.items()}
    await fold_and_acknowledge(monitor, settings_, 1, range(2, 4))  # partition 1's file moves on
    store.failed[2] = "a write failed"  # and partition 2's store refuses it
    assigned = {TP(topic, p) for topic in settings_.topics.inputs() for p in (0, 1)}
    monkeypatch.setattr(
        type(monitor.app),
        "consumer",
        property(lambda app: type("C", (), {"assignment": lambda self: assigned})()),
    )
    table.newly_assigned = set(assigned)
    pipeline.revoke(list(pipeline.states))
    pipeline.parked = {}  # a restart: nothing live to keep
    await table.on_recovered(table)
    assert pipeline.states[0] is built[0]
    assert pipeline.states[1] is not built[1]
    assert canonical(pipeline.states[1]) == canonical(
        restore(store.take_records({1})[0], pipeline.config)
    )
    assert table.handover_parts["prewarmed_partitions"] == 1
    file_records, _ = store.take_records({0, 1})
    assert table.restored["records"] == len(file_records) > 0  # built ones counted too
    assert sorted(store.offsets(table.changelog_topic.get_topic_name(), {0, 1, 2})) == [0, 1]
