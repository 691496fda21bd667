"""End to end on the embedded broker with real worker processes, scraped over HTTP."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid

import orjson
import pytest

from agents.broker import EmbeddedBroker
from stream.events import EVENT_TYPES
from stream.settings import Topics
from tests.e2e.harness import WorkerProcess, produce, read_topic, total, wait_for

pytestmark = pytest.mark.e2e
TOPIC = dict(zip(EVENT_TYPES, Topics().inputs()))  # event type -> default topic


@pytest.fixture
def broker():
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def workers(tmp_path):
    started: list[WorkerProcess] = []

    def start(
        broker_url: str, app_id: str, clock_ahead_s: float = 0.0, data_dir: str = "", **env: str
    ) -> WorkerProcess:
        worker = WorkerProcess(
            broker_url,
            app_id,
            str(tmp_path / f"worker-{len(started)}.log"),
            env=env,
            clock_ahead_s=clock_ahead_s,
            data_dir=data_dir,
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    for worker in started:
        print(f"--- {worker.log_path}\n" + open(worker.log_path, errors="replace").read()[-3000:])


def ev(event_type: str, campaign: str, at_ms: int, **fields) -> dict:
    return {
        "event_id": fields.pop("event_id", uuid.uuid4().hex),
        "event_type": event_type,
        "occurred_at": at_ms,
        "campaign_id": campaign,
        **fields,
    }


def msg(body, topic_type: str | None = None) -> tuple[str, bytes, bytes]:
    first = body[0] if isinstance(body, list) else body
    topic = TOPIC[topic_type or first["event_type"]]
    return topic, first["campaign_id"].encode(), orjson.dumps(body)


def fully_processed(worker: WorkerProcess, events: float):
    metrics = worker.try_metrics()
    lag = [v for (n, _), v in metrics.items() if n == "kpi_consumer_lag_messages"]
    done = total(metrics, "kpi_events_total") >= events and lag and not any(lag)
    return metrics if done else None


def test_known_events_give_exact_metrics(broker, workers):
    now = int(time.time() * 1000)
    messages = []
    alpha_impressions = [
        ev("impression", "alpha", now - 30_000, channel="search", cost=0.002) for _ in range(1000)
    ]
    messages += [msg(alpha_impressions[i : i + 100]) for i in range(0, 1000, 100)]
    messages += [msg(dict(e)) for e in alpha_impressions[:20]]  # producer retries: duplicates
    good = [ev("impression", "alpha", now - 30_000, channel="search", cost=0.002) for _ in range(2)]
    messages.append(msg([good[0], {"event_type": "impression"}, good[1]]))  # one bad element
    messages += [
        msg(ev("click", "alpha", now - 20_000, channel="search", cost=0.1)) for _ in range(50)
    ]
    leads = [ev("lead", "alpha", now - 600_000, lead_id=f"L{i}") for i in range(10)]
    contacts = [
        ev("sales_contact", "alpha", now - 600_000 + (i + 1) * 60_000, lead_id=f"L{i}")
        for i in range(6)
    ]
    messages += [msg(c) for c in contacts[4:]]  # two contacts published before their leads
    messages += [msg(lead) for lead in leads]
    messages += [msg(c) for c in contacts[:4]]
    messages += [
        msg(ev("sale", "alpha", now - 30_000, value=100, currency="USD", lead_id=f"L{i}"))
        for i in range(3)
    ]
    messages += [msg(ev("impression", "beta", now - 40_000)) for _ in range(500)]
    messages += [msg(ev("click", "beta", now - 40_000)) for _ in range(10)]
    messages += [msg(ev("click", "beta", now - 2 * 3600_000)) for _ in range(7)]  # late
    messages.append(msg(ev("sales_contact", "gamma", now - 60_000, lead_id="ghost")))
    messages += [(TOPIC["click"], b"alpha", b"not json") for _ in range(3)]
    messages += [msg(ev("impression", "alpha", now), "click") for _ in range(2)]  # wrong topic
    messages.append(msg(ev("sale", "alpha", now, value=5, currency="EUR")))
    asyncio.run(produce(broker.bootstrap, messages))

    worker = workers(broker.url, "e2e-exact", KPI_EXPORT="full")  # every KPI, as the worker sees it
    expected_events = 1002 + 50 + 10 + 6 + 3 + 500 + 17 + 1
    m = wait_for(lambda: fully_processed(worker, expected_events), 120, "all events folded")

    def val(name, **labels):
        return total(m, name, **labels)

    assert val("kpi_events_total") == expected_events
    assert (
        val("kpi_events_total", campaign="alpha", channel="search", event_type="impression") == 1002
    )
    assert val("kpi_events_total", campaign="alpha", event_type="click") == 50
    assert val("kpi_events_total", campaign="alpha", event_type="sale") == 3
    assert val("kpi_events_total", campaign="beta", event_type="click") == 17
    assert val("kpi_events_duplicate_total", event_type="impression") == 20
    assert val("kpi_events_late_total", event_type="click") == 7
    rejected = {
        dict(ls)["reason"]: v for (n, ls), v in m.items() if n == "kpi_events_rejected_total"
    }
    assert rejected == {"invalid_json": 3, "topic_mismatch": 2, "currency": 1, "missing_field": 1}

    assert val("kpi_window_events", campaign="beta", event_type="click", window="1h") == 10
    assert val("kpi_ctr_ratio", campaign="alpha", window="5m") == pytest.approx(50 / 1002)
    assert val("kpi_window_spend", campaign="alpha", window="1h") == pytest.approx(1002 * 0.002 + 5)
    assert val("kpi_window_revenue", campaign="alpha", window="1h") == pytest.approx(300)
    assert val("kpi_roas_ratio", campaign="alpha", window="1h") == pytest.approx(300 / 7.004)
    assert val("kpi_lead_to_sale_ratio", campaign="alpha", window="1h") == pytest.approx(0.3)
    assert val("kpi_cpa", campaign="alpha", window="1h") == pytest.approx(7.004 / 3)
    assert val("kpi_aov", campaign="alpha", window="1h") == pytest.approx(100)
    assert ("kpi_conversion_ratio", (("campaign", "gamma"), ("window", "1h"))) not in m  # no clicks
    assert val("kpi_sales_response_seconds_count", campaign="alpha") == 6
    assert val("kpi_sales_response_seconds_sum", campaign="alpha") == pytest.approx(1260)
    assert val("kpi_sales_response_seconds_bucket", campaign="alpha", le="120.0") == 2
    assert val("kpi_sales_response_p50_seconds", campaign="alpha", window="1h") == pytest.approx(
        180, rel=0.01
    )
    assert val("kpi_leads_awaiting_contact", campaign="alpha") == 4
    assert 600 <= val("kpi_oldest_uncontacted_lead_age_seconds", campaign="alpha") < 900
    assert val("kpi_sales_contacts_unmatched", campaign="gamma") == 1
    assert val("kpi_partitions_owned") == 4
    # Faust's own stats: the monitor counts a fetch once its fold is done, and the fold yields
    # in slices, so a scrape may land between the last slice and the count.
    wait_for(
        lambda: (
            total(worker.try_metrics(), "faust_messages_received_total") >= expected_events / 100
        ),
        10,
        "Faust's message count",
    )

    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/kpis", timeout=5) as response:
        kpis = orjson.loads(response.read())["campaigns"]
    hour = kpis["alpha"]["windows"]["1h"]
    assert hour["events"]["impression"] == 1002 and hour["ctr"] == pytest.approx(50 / 1002)
    assert hour["cpa"] == pytest.approx(7.004 / 3) and kpis["alpha"]["leads_awaiting_contact"] == 4
    assert kpis["gamma"]["windows"]["1h"]["ctr"] is None  # undefined, not 0
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/health", timeout=5) as response:
        health = orjson.loads(response.read())
    assert health["partitions"] == [0, 1, 2, 3] and health["campaigns"] == 3
    assert health["events_folded"] == expected_events + 20  # + duplicates
    assert 0 <= health["loop_lag_worst_seconds"] < 5 and health["last_metrics_render_seconds"] > 0

    dead = asyncio.run(read_topic(broker.bootstrap, "marketing.rejected", 7))
    assert len(dead) == 7
    headers = [dict(r.headers) for r in dead]
    assert sorted(h["kpi.reason"].decode() for h in headers) == sorted(
        ["invalid_json"] * 3 + ["topic_mismatch"] * 2 + ["currency", "missing_field"]
    )
    not_json = [r for r in dead if dict(r.headers)["kpi.reason"] == b"invalid_json"]
    assert all(
        r.value == b"not json" and dict(r.headers)["kpi.source.topic"] == b"marketing.clicks"
        for r in not_json
    )
    for r in dead:  # keyed by the source: a replay sends the same key, compaction keeps one
        h = dict(r.headers)
        index = h.get("kpi.source.index", b"").decode()
        assert (
            r.key
            == (
                f"{h['kpi.source.topic'].decode()}/{h['kpi.source.partition'].decode()}/"
                f"{h['kpi.source.offset'].decode()}/{index}"
            ).encode()
        )
    assert len({r.key for r in dead}) == 7


def campaign_traffic(campaigns: int, per_campaign: int, seed: int, batch: int = 1):
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    expected: dict[str, int] = {}
    messages = []
    for _ in range(per_campaign):
        for c in range(campaigns):
            name = f"c{c:03d}"
            event_type = "click" if rng.random() < 0.1 else "impression"
            messages.append((event_type, name, ev(event_type, name, now - rng.randint(0, 120_000))))
            expected[name] = expected.get(name, 0) + 1
    rng.shuffle(messages)
    out = []
    if batch == 1:
        out = [msg(body) for _, _, body in messages]
    else:
        grouped: dict = {}
        for event_type, name, body in messages:
            grouped.setdefault((event_type, name), []).append(body)
        for bodies in grouped.values():
            out += [msg(bodies[i : i + batch]) for i in range(0, len(bodies), batch)]
    return out, expected, messages


def per_campaign(metrics_list: list[dict]) -> dict[str, float]:
    out: dict[str, float] = {}
    for metrics in metrics_list:
        for (name, labels), value in metrics.items():
            if name == "kpi_events_total":
                campaign = dict(labels)["campaign"]
                out[campaign] = out.get(campaign, 0) + value
    return out


def test_two_workers_share_partitions_and_totals(broker, workers):
    messages, expected, _ = campaign_traffic(40, 100, seed=3, batch=20)
    asyncio.run(produce(broker.bootstrap, messages))
    a = workers(broker.url, "e2e-shared")
    b = workers(broker.url, "e2e-shared")

    def settled():
        ma, mb = a.try_metrics(), b.try_metrics()
        owned = (total(ma, "kpi_partitions_owned"), total(mb, "kpi_partitions_owned"))
        lag = [v for m in (ma, mb) for (n, _), v in m.items() if n == "kpi_consumer_lag_messages"]
        if (
            owned[0] >= 1
            and owned[1] >= 1
            and sum(owned) == 4
            and lag
            and not any(lag)
            and per_campaign([ma, mb]) == expected
        ):
            return ma, mb
        return None

    ma, mb = wait_for(settled, 180, "both workers owning partitions with all events folded")
    assert per_campaign([ma, mb]) == expected
    only_a, only_b = set(per_campaign([ma])), set(per_campaign([mb]))
    assert only_a and only_b and not (only_a & only_b)  # each campaign exported by one worker


def test_sigkill_mid_stream_then_restart_is_exact(broker, workers, tmp_path):
    # Enough events that the batch path (~100k events/s here) is still folding when it is killed.
    messages, expected, _ = campaign_traffic(100, 2000, seed=5)
    rng = random.Random(9)
    duplicates = [messages[rng.randrange(len(messages))] for _ in range(300)]
    malformed = [(TOPIC["impression"], b"c000", b"{oops") for _ in range(50)]
    stream = messages + duplicates + malformed
    rng.shuffle(stream)
    asyncio.run(produce(broker.bootstrap, stream))
    expected_events = sum(expected.values())

    app_id = "e2e-crash"
    kills = []
    local = str(tmp_path / "crash-data")  # every restart reads the local store's file and the tail
    for fraction in (0.25, 0.6):
        worker = workers(broker.url, app_id, data_dir=local)
        seen = wait_for(
            lambda f=fraction, w=worker: (
                lambda m: (
                    total(m, "kpi_events_total") >= f * expected_events
                    and total(m, "kpi_events_total")
                )
            )(w.try_metrics()),
            180,
            f"{fraction:.0%} processed",
            interval=0.02,
        )
        worker.kill()
        kills.append(seen)
    worker = workers(broker.url, app_id, data_dir=local)
    m = wait_for(lambda: fully_processed(worker, expected_events), 240, "all events after restarts")
    time.sleep(3)  # anything replayed twice would show up now
    m = worker.metrics()
    assert kills[0] < expected_events and kills[1] < expected_events, kills
    assert per_campaign([m]) == expected
    # Every event is unique in ``messages``, so each extra copy is one duplicate.
    assert total(m, "kpi_events_duplicate_total") == len(duplicates)
    assert total(m, "kpi_events_rejected_total", reason="invalid_json") == len(malformed)
    print(f"killed at {kills[0]:.0f} and {kills[1]:.0f} of {expected_events} events")


def test_clean_restart_is_exact_despite_short_changelog_restore(broker, workers):
    """After a clean stop Faust has committed everything, but this broker's wrong end offsets make
    the changelog restore stop before the last records. The state's own checkpoints must win."""
    messages, expected, _ = campaign_traffic(20, 50, seed=11)
    asyncio.run(produce(broker.bootstrap, messages))
    first = workers(broker.url, "e2e-restart")
    wait_for(lambda: fully_processed(first, sum(expected.values())), 120, "first run folded all")
    first.stop()
    second = workers(broker.url, "e2e-restart")
    wait_for(
        lambda: fully_processed(second, sum(expected.values())), 120, "restarted worker caught up"
    )
    time.sleep(2)
    assert per_campaign([second.metrics()]) == expected


def test_a_restart_reads_its_local_file_and_the_changelog_tail(broker, workers, tmp_path):
    """SIGKILLed after folding everything, restarted on the same data dir: the records come from
    the local store's file (the changelog gives what the file lacks), exactly."""
    messages, expected, _ = campaign_traffic(30, 200, seed=13)
    asyncio.run(produce(broker.bootstrap, messages))
    local = str(tmp_path / "data")
    first = workers(broker.url, "e2e-local", data_dir=local)
    wait_for(lambda: fully_processed(first, sum(expected.values())), 120, "first run folded all")
    time.sleep(1)  # the last batch's records acknowledged and mirrored
    first.kill()
    more, expected_more, _ = campaign_traffic(30, 50, seed=14)
    asyncio.run(produce(broker.bootstrap, more))
    for campaign, count in expected_more.items():
        expected[campaign] = expected.get(campaign, 0) + count
    second = workers(broker.url, "e2e-local", data_dir=local)
    wait_for(lambda: fully_processed(second, sum(expected.values())), 120, "restarted, caught up")
    time.sleep(2)
    assert per_campaign([second.metrics()]) == expected
    restored = orjson.loads(second.get("/health"))["restored"]
    assert restored["records"] > 0
    assert restored["read_from_changelog"] < restored["records"] / 10, restored


def test_a_local_file_the_changelog_does_not_continue_is_not_used(workers, tmp_path):
    """The broker reset under a worker's data dir (a recreated changelog): the file is dropped,
    and the new broker's events alone are counted."""
    local = str(tmp_path / "data")
    with EmbeddedBroker() as old:
        messages, expected_old, _ = campaign_traffic(10, 100, seed=15)
        asyncio.run(produce(old.bootstrap, messages))
        worker = workers(old.url, "e2e-reset", data_dir=local)
        wait_for(lambda: fully_processed(worker, sum(expected_old.values())), 120, "first broker")
        time.sleep(1)
        worker.stop()
    with EmbeddedBroker() as new:
        messages, expected, _ = campaign_traffic(10, 30, seed=16)
        asyncio.run(produce(new.bootstrap, messages))
        worker = workers(new.url, "e2e-reset", data_dir=local)
        wait_for(lambda: fully_processed(worker, sum(expected.values())), 120, "second broker")
        time.sleep(2)
        assert per_campaign([worker.metrics()]) == expected
        worker.stop()


async def committed_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """Sum over partitions of the offsets the consumer group has committed, by topic."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        out = {}
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            out[topic] = sum(
                [
                    await consumer.committed(TopicPartition(topic, p)) or 0
                    for p in sorted(partitions)
                ]
            )
        return out
    finally:
        await consumer.stop()


def test_batch_ingest_commits_offsets_and_counts_messages_for_faust(broker, workers):
    """Whole fetches bypass Faust's per-message path; lag tools outside the monitor and Faust's
    own counters must still see every input message."""
    messages, expected, _ = campaign_traffic(10, 60, seed=13)
    asyncio.run(produce(broker.bootstrap, messages))
    per_topic: dict[str, int] = {}
    for topic, _, _ in messages:
        per_topic[topic] = per_topic.get(topic, 0) + 1
    worker = workers(broker.url, "e2e-commits")
    m = wait_for(lambda: fully_processed(worker, sum(expected.values())), 120, "all events folded")
    assert per_campaign([m]) == expected
    for topic, count in per_topic.items():
        assert total(m, "faust_messages_received_total", topic=topic) == count, topic
    committed = wait_for(
        lambda: (lambda c: c if c == per_topic else None)(
            asyncio.run(committed_offsets(broker.bootstrap, "e2e-commits", sorted(per_topic)))
        ),
        30,
        "the group's committed offsets at the end of every input partition",
    )
    assert committed == per_topic


def produce_over(bootstrap: str, messages: list, seconds: float) -> threading.Thread:
    """Produce ``messages`` in 20 steps spread over ``seconds``, in the background."""

    def run() -> None:
        step = len(messages) // 20 + 1
        for start in range(0, len(messages), step):
            asyncio.run(produce(bootstrap, messages[start : start + step]))
            time.sleep(seconds / 20)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_worker_joining_then_leaving_mid_stream_keeps_totals_exact(broker, workers):
    """Two rebalances while whole fetches are being folded: one when a second worker joins,
    one when the first leaves. Events keep arriving throughout."""
    messages, expected, _ = campaign_traffic(50, 1200, seed=17)
    expected_events = sum(expected.values())
    producer = produce_over(broker.bootstrap, messages, 30)
    first = workers(broker.url, "e2e-rebalance")
    wait_for(
        lambda: total(first.try_metrics(), "kpi_events_total") >= 0.1 * expected_events,
        120,
        "10% folded by the first worker",
    )
    second = workers(broker.url, "e2e-rebalance")
    wait_for(
        lambda: total(second.try_metrics(), "kpi_partitions_owned") >= 1,
        120,
        "the second worker owning partitions",
    )
    folded_by_then = total(first.try_metrics(), "kpi_events_total") + total(
        second.try_metrics(), "kpi_events_total"
    )
    first.stop()
    producer.join()
    wait_for(lambda: fully_processed(second, expected_events), 180, "the second worker took over")
    time.sleep(3)  # anything folded twice would show up now
    assert folded_by_then < expected_events  # both rebalances happened mid-stream
    assert per_campaign([second.metrics()]) == expected
    print(f"{folded_by_then:.0f} of {expected_events} events folded when the first worker left")
