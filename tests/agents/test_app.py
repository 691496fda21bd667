"""The ingest agent under Faust's test_context: no broker, memory store, real agent code."""

import asyncio
from typing import NamedTuple

import orjson
import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from agents.app import create_app
from agents.kpis_json import snapshot_json
from agents.lag import caught_up, consumer_lag
from stream.settings import Settings
from tests.factories import NOW_MS, event, raw
from tests.scrape import Samples, samples_of

SETTINGS = Settings(
    broker="kafka://127.0.0.1:9", web_port=16199, batch_within_seconds=0.01, export="full"
)


async def deliver(test_agent, topic: str, partition: int, offset: int, value: bytes) -> None:
    message = test_agent.to_message(b"key", value, partition=partition, offset=offset)
    message.topic = topic
    channel = test_agent.stream().channel
    await channel.put(await channel.decode(message))


async def until(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def scrape(monitor) -> Samples:
    """Every sample of the /metrics page: the KPI families and the process registry's."""
    return samples_of(monitor.exporter.text() + generate_latest(monitor.registry).decode())


@pytest.fixture
def monitor():
    registry = CollectorRegistry()
    monitor = create_app(SETTINGS, clock=lambda: NOW_MS, registry=registry)
    monitor.pipeline.assign(range(SETTINGS.partitions), [])
    monitor.changelog = []  # (topic, partition, records): test_context has no producer to send with

    async def capture(topic, partition, items):
        monitor.changelog.append((topic, partition, items))

    monitor.table.changelog_sink = capture
    return monitor


async def test_agent_folds_batches_into_state_and_metrics(monitor):
    topics = SETTINGS.topics
    async with monitor.app.agents["ingest"].test_context() as agent:
        await deliver(
            agent,
            topics.impressions,
            1,
            0,
            orjson.dumps([event("impression", cost=0.5) for _ in range(4)]),
        )
        await deliver(agent, topics.clicks, 1, 0, raw(event("click", cost=1.0)))
        await deliver(agent, topics.clicks, 1, 1, b"{broken")
        await deliver(agent, topics.sales, 1, 0, raw(event("sale", value=30, currency="EUR")))
        await until(lambda: monitor.pipeline.states[1].meta.checkpoint[3] == 0)

    values = scrape(monitor)
    assert (
        values[
            (
                "kpi_events_total",
                (("campaign", "c1"), ("channel", "unknown"), ("event_type", "impression")),
            )
        ]
        == 4
    )
    assert values[("kpi_ctr_ratio", (("campaign", "c1"), ("window", "5m")))] == 0.25
    assert values[("kpi_window_spend", (("campaign", "c1"), ("window", "1h")))] == 3.0
    assert values[("kpi_events_rejected_total", (("reason", "invalid_json"),))] == 1
    assert values[("kpi_events_rejected_total", (("reason", "currency"),))] == 1
    assert values[("kpi_conversion_ratio", (("campaign", "c1"), ("window", "5m")))] == 0.0
    for absent in ("kpi_lead_to_sale_ratio", "kpi_cpa", "kpi_aov"):  # zero leads / sales
        assert (absent, (("campaign", "c1"), ("window", "5m"))) not in values
    # The live state is the pipeline's: the table's store keeps no second copy of it.
    assert len(monitor.table.data) == 0
    # Each batch goes to the changelog partition of its source partition, Meta last.
    for topic, partition, items in monitor.changelog:
        assert topic == "kpi-monitor-kpi-state-changelog" and partition == 1
        assert orjson.loads(items[-1][0]) == [1, "m"]


async def test_agent_skips_messages_the_state_already_holds(monitor):
    topics = SETTINGS.topics
    async with monitor.app.agents["ingest"].test_context() as agent:
        await deliver(agent, topics.clicks, 2, 0, raw(event("click", campaign="x")))
        await until(lambda: monitor.pipeline.states[2].meta.checkpoint[1] == 0)
        await deliver(agent, topics.clicks, 2, 0, raw(event("click", campaign="x")))  # redelivered
        await deliver(agent, topics.clicks, 2, 1, raw(event("click", campaign="x")))
        await until(lambda: monitor.pipeline.states[2].meta.checkpoint[1] == 1)
    totals = monitor.pipeline.states[2].campaigns["x"].by_channel["unknown"]
    assert totals[1] == 2
    assert monitor.registry.get_sample_value("kpi_messages_replayed_total") == 1


async def test_state_rebuilt_from_table_matches(monitor):
    topics = SETTINGS.topics
    async with monitor.app.agents["ingest"].test_context() as agent:
        await deliver(
            agent, topics.leads, 0, 0, raw(event("lead", lead_id="L", at_ms=NOW_MS - 600_000))
        )
        await deliver(agent, topics.sales_contacts, 0, 0, raw(event("sales_contact", lead_id="L")))
        await until(lambda: monitor.pipeline.states[0].meta.checkpoint[4] == 0)
    before = snapshot_json(monitor.exporter.snapshot())
    restored: dict[bytes, bytes | None] = {}
    for _, _, items in monitor.changelog:  # what a changelog restore would read
        restored.update(items)
    monitor.pipeline.assign(range(SETTINGS.partitions), list(restored.items()))
    assert snapshot_json(monitor.exporter.snapshot()) == before
    assert before["campaigns"]["c1"]["events_total"]["sales_contact"] == 1
    assert monitor.pipeline.resume_positions()[(topics.leads, 0)] == 1


def test_consumer_lag_counts_from_the_state_checkpoint_to_the_high_watermark():
    positions = {("t", 0): 10, ("t", 1): 5, ("t", 2): 7, ("u", 0): 3}
    assignment = {TP("t", 0), TP("t", 1), TP("u", 0)}  # t/2 moved away
    highwater = {TP("t", 0): 25, TP("t", 1): 4, TP("u", 0): None}.get
    assert consumer_lag(positions, assignment, highwater) == {("t", 0): 15, ("t", 1): 0}


@pytest.mark.parametrize(
    ("lag", "partitions", "expected"),
    [
        ({("t", 0): 0, ("u", 0): 0, ("t", 1): 0, ("u", 1): 0}, [0, 1], True),
        ({("t", 0): 0, ("u", 0): 0, ("t", 1): 0, ("u", 1): 3}, [0, 1], False),  # one behind
        ({("t", 0): 0, ("u", 0): 0, ("t", 1): 0}, [0, 1], False),  # one not fetched yet: unknown
        ({("t", 0): 0, ("u", 0): 0, ("t", 1): 9}, [0], True),  # t/1 is not owned
        ({}, [], False),  # owning nothing is not being caught up
    ],
)
def test_caught_up_needs_every_owned_partitions_lag_known_and_zero(lag, partitions, expected):
    assert caught_up(lag, ["t", "u"], partitions) is expected


def test_a_fetched_batch_is_recorded_as_faust_records_each_message():
    """Read offsets, acks for the commit timer, Faust's monitor counts, and the stream's inbound
    time (without which Faust's consumer logs "Stream has not started processing" for every
    input partition after stream_processing_timeout)."""
    from types import SimpleNamespace

    from faust.types import TP

    from agents.app import create_app
    from stream.settings import Settings

    monitor = create_app(Settings(broker="kafka://127.0.0.1:9"))
    consumer, faust_monitor = monitor.app.consumer, monitor.app.monitor
    owned, gone = TP("marketing.clicks", 0), TP("marketing.clicks", 1)
    consumer._batch_done(
        [
            (owned, [SimpleNamespace(offset=5), SimpleNamespace(offset=6)]),
            (gone, [SimpleNamespace(offset=9)]),
        ],
        {owned},
        lambda tp: 10,
    )
    assert consumer._read_offset[owned] == 6 and faust_monitor.tp_read_offsets[owned] == 6
    assert list(consumer._acked[owned]) == [5, 6] and not consumer._acked[gone]
    assert faust_monitor.messages_received_by_topic["marketing.clicks"] == 3
    assert (
        faust_monitor.stream_inbound_time[owned] > 0 and gone in faust_monitor.stream_inbound_time
    )


class Fetched(NamedTuple):
    offset: int
    value: bytes
    timestamp: int
    key: bytes | None = None


async def test_a_revoke_waits_for_the_fold_in_progress(monitor):
    """The fold yields mid-batch; a revoke then must not park a partition half folded (a kept
    partition would hold counts ahead of its checkpoint): it waits for the batch."""
    tp = TP(SETTINGS.topics.clicks, 0)
    big = [orjson.dumps([event("click") for _ in range(5_000)]) for _ in range(4)]
    fold = asyncio.create_task(
        monitor.app.batch_handler([(tp, [Fetched(o, v, NOW_MS) for o, v in enumerate(big)])])
    )
    # Poll turn by turn: the fold has begun, and yielded (an Event would need a hook in it).
    while not monitor.pipeline.states[0].meta.arrival[1]:
        if fold.done():
            fold.result()  # a fold that failed says why, instead of a test that never ends
        await asyncio.sleep(0)
    assert not fold.done()
    await monitor.app.on_partitions_revoked.send({tp})
    assert fold.done()
    parked = monitor.pipeline.parked[0]
    assert parked.meta.checkpoint[1] == 3  # the whole batch, and its records written
    assert sum(s.by_channel["unknown"][1] for s in parked.campaigns.values()) == 20_000
    written = [key for _, partition, items in monitor.changelog for key, _ in items]
    assert b'[0,"m"]' in written


async def test_after_a_hand_over_the_first_round_waits_for_the_taken_partitions_to_catch_up(
    monitor,
):
    loop = monitor.decisions
    inputs = SETTINGS.topics.inputs()
    behind = {(topic, p): 0 for topic in inputs for p in monitor.pipeline.states}
    behind[(inputs[1], 2)] = 7  # a taken partition still behind
    loop.lag = lambda: dict(behind)
    waiting = asyncio.ensure_future(loop.caught_up(5.0))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    behind[(inputs[1], 2)] = 0
    assert await asyncio.wait_for(waiting, 2.0) is True
    del behind[(inputs[0], 3)]  # no end offset fetched yet: not known to be caught up
    assert await loop.caught_up(0.3) is False


async def test_decision_rounds_run_one_at_a_time(monitor):
    loop = monitor.decisions
    running, most = 0, 0

    async def round_():
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)  # sends decisions: yields to the loop
        running -= 1
        return []

    loop._tick = round_
    await asyncio.gather(loop.tick(), loop.tick(), loop.tick())
    assert most == 1


async def test_a_failed_hand_over_stops_the_worker(monitor, monkeypatch):
    crashed = []

    async def crash(reason):
        crashed.append(reason)

    async def broken(partitions):
        raise RuntimeError("local store: partitions [2] could not be written")

    monkeypatch.setattr(monitor.app, "crash", crash)
    monkeypatch.setattr(monitor.table, "take_records", broken)
    monkeypatch.setattr(
        type(monitor.app), "consumer", property(lambda app: type("C", (), {"assignment": set})())
    )
    with pytest.raises(RuntimeError):
        await monitor.table.on_recovered(monitor.table)
    assert [str(r) for r in crashed] == ["local store: partitions [2] could not be written"]
