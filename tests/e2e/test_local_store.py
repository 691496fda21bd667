# ruff: noqa: F811 (pytest fixtures imported from test_e2e)
"""The local store never lies, end to end on the embedded broker: a data dir another app used is
set aside (each app exact, neither shows the other's campaigns); a file with a damaged page is set
aside and the worker serves exact figures from the changelog; a data dir that cannot hold a file
leaves the worker on the changelog, saying so; a changelog batch the broker refuses stops the
worker before its input offsets are committed past it, and a restart is exact."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from stream.settings import Topics
from tests.e2e.harness import guarded_broker, wait_for
from tests.e2e.test_e2e import (  # noqa: F401 (fixtures)
    broker,
    campaign_traffic,
    committed_offsets,
    ev,
    fully_processed,
    per_campaign,
    produce,
    workers,
)

pytestmark = pytest.mark.e2e
STATE_FILE = "kpi-state.state.sqlite"


def _health(worker) -> dict:
    return orjson.loads(worker.get("/health"))


def _renamed(messages, prefix: str) -> list:
    """The same traffic on another app's topics (``marketing.clicks`` -> ``b.clicks``) and
    campaigns (``c001`` -> ``bc001``)."""
    out = []
    for topic, key, value in messages:
        body = orjson.loads(value)
        for event in body if isinstance(body, list) else [body]:
            event["campaign_id"] = prefix + event["campaign_id"]
        out.append((topic.replace("marketing.", f"{prefix}."), key, orjson.dumps(body)))
    return out


def _topics_env(prefix: str) -> dict[str, str]:
    """Every topic of the app renamed (``marketing.clicks`` -> ``b.clicks``)."""
    topics = Topics()
    return {
        f"KPI_TOPIC_{field.upper()}": getattr(topics, field).replace("marketing.", f"{prefix}.")
        for field in (
            "impressions",
            "clicks",
            "leads",
            "sales",
            "sales_contacts",
            "rejected",
            "decisions",
            "plans",
        )
    }


def test_a_data_dir_of_another_app_is_set_aside_and_each_app_is_exact(broker, workers, tmp_path):
    local = str(tmp_path / "data")
    first, expected_first, _ = campaign_traffic(10, 20, seed=21)
    asyncio.run(produce(broker.bootstrap, first))
    appa = workers(broker.url, "appa", data_dir=local)
    wait_for(lambda: fully_processed(appa, sum(expected_first.values())), 120, "appa folded")
    time.sleep(1)  # mirrored to the file
    appa.kill()
    traffic, expected, _ = campaign_traffic(5, 10, seed=22)
    env = _topics_env("b")
    asyncio.run(produce(broker.bootstrap, _renamed(traffic, "b")))
    appb = workers(broker.url, "appb", data_dir=local, **env)
    total_b = sum(expected.values())
    wait_for(lambda: fully_processed(appb, total_b), 120, "appb folded its own events")
    time.sleep(2)
    assert per_campaign([appb.metrics()]) == {"b" + c: n for c, n in expected.items()}
    health = _health(appb)["local_store"]
    assert health["in_use"] and health["fallbacks"].get("foreign") == 1, health
    assert [p.name for p in Path(local).iterdir() if ".foreign-" in p.name]
    appb.stop()
    # And appa, back on the data dir appb now holds: its file is appb's, set aside in turn.
    appa = workers(broker.url, "appa", data_dir=local)
    wait_for(lambda: fully_processed(appa, sum(expected_first.values())), 120, "appa again")
    time.sleep(2)
    assert per_campaign([appa.metrics()]) == expected_first


def test_a_file_with_a_damaged_page_is_set_aside_and_the_figures_stay_exact(
    broker, workers, tmp_path
):
    local = tmp_path / "data"
    messages, expected, _ = campaign_traffic(40, 50, seed=23)
    asyncio.run(produce(broker.bootstrap, messages))
    worker = workers(broker.url, "e2e-damaged", data_dir=str(local))
    wait_for(lambda: fully_processed(worker, sum(expected.values())), 120, "folded")
    time.sleep(1)
    worker.kill()
    path = local / STATE_FILE
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the pages in the file itself
    db.close()
    pages = path.stat().st_size // 4096
    assert pages > 3, pages
    with open(path, "r+b") as file:  # a disk (or a crash of the disk) broke a data page
        file.seek(4096)
        file.write(os.urandom(4096))
    for restart in range(2):
        worker = workers(broker.url, "e2e-damaged", data_dir=str(local))
        wait_for(lambda w=worker: fully_processed(w, sum(expected.values())), 120, "restarted")
        time.sleep(2)
        assert worker.process.poll() is None, f"restart {restart} stopped"
        assert per_campaign([worker.metrics()]) == expected, restart
        worker.stop()
    assert [p.name for p in local.iterdir() if ".corrupt-" in p.name]


def test_a_data_dir_that_cannot_hold_the_file_leaves_the_worker_on_the_changelog(
    broker, workers, tmp_path
):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the data dir should be")
    messages, expected, _ = campaign_traffic(10, 30, seed=24)
    asyncio.run(produce(broker.bootstrap, messages))
    worker = workers(broker.url, "e2e-nodir", data_dir=str(blocked / "data"))
    wait_for(lambda: fully_processed(worker, sum(expected.values())), 120, "folded")
    time.sleep(1)
    assert per_campaign([worker.metrics()]) == expected
    health = _health(worker)["local_store"]
    assert not health["in_use"] and health["fallbacks"] == {"unavailable": 1}, health
    assert b'kpi_local_store_fallbacks_total{reason="unavailable"} 1.0' in worker.get("/metrics")


# Changelog records whose key names a campaign starting with "blocked" are refused by the broker.
REFUSE_BLOCKED = {
    "type": "object",
    "properties": {
        "key": {"type": "array", "not": {"contains": {"type": "string", "pattern": "^blocked"}}}
    },
}


async def _clicks(bootstrap: str, campaign: str, count: int) -> None:
    """``count`` click messages of one campaign, all to partition 0 of the clicks topic."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for _ in range(count):
            body = orjson.dumps(ev("click", campaign, now))
            await producer.send_and_wait("marketing.clicks", body, partition=0)
    finally:
        await producer.stop()


def test_a_refused_changelog_batch_stops_the_worker_before_its_offsets_are_committed(
    workers,
    tmp_path,
):
    app = "e2e-refused"
    changelog = f"{app}-kpi-state-changelog"
    with guarded_broker(tmp_path, {changelog: REFUSE_BLOCKED}) as url:
        bootstrap = url.removeprefix("kafka://")
        worker = workers(url, app)
        wait_for(lambda: worker.try_metrics(), 60, "the worker to serve")
        asyncio.run(_clicks(bootstrap, "good-a", 20))
        wait_for(lambda: fully_processed(worker, 20), 60, "good-a folded")
        asyncio.run(_clicks(bootstrap, "blocked-x", 10))  # its state records are refused
        wait_for(lambda: worker.process.poll() is not None, 60, "the worker to stop")
        asyncio.run(_clicks(bootstrap, "good-b", 30))  # after the refusal, same partition
        committed = asyncio.run(committed_offsets(bootstrap, app, ["marketing.clicks"]))
        assert committed["marketing.clicks"] <= 20, committed  # none past the refused batch
        (tmp_path / "registry" / f"{changelog}.json").unlink()  # the broker takes them now
        again = workers(url, app)
        wait_for(lambda: fully_processed(again, 60), 120, "restarted and caught up")
        time.sleep(2)
        assert per_campaign([again.metrics()]) == {"good-a": 20, "blocked-x": 10, "good-b": 30}
        log = Path(tmp_path / "worker-0.log").read_text()
        assert "refused a batch of the state's changelog" in log
