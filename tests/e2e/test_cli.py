"""The CLI against the real embedded broker: refusing bad topic layouts, publishing files."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.broker import EmbeddedBroker
from tests.e2e.harness import ROOT, read_topic

pytestmark = pytest.mark.e2e


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, **(env or {})),
    )


async def create(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, n, 1) for name, n in topics.items()])
    await admin.close()


def test_run_refuses_inputs_that_are_not_copartitioned():
    with EmbeddedBroker() as broker:
        asyncio.run(create(broker.bootstrap, {"marketing.impressions": 4, "marketing.clicks": 2}))
        result = cli("run", "--broker", broker.url)
    assert result.returncode == 2
    assert "same partition count" in result.stderr
    assert "marketing.impressions=4" in result.stderr and "marketing.clicks=2" in result.stderr


def test_bad_setting_fails_fast_naming_it():
    result = cli("run", env={"KPI_WINDOWS": "5 minutes"})
    assert result.returncode == 2 and "KPI_WINDOWS" in result.stderr


def test_send_routes_lines_to_their_topics(tmp_path):
    lines = [
        {
            "event_id": "a",
            "event_type": "click",
            "occurred_at": 1_795_000_000_000,
            "campaign_id": "x",
        },
        [
            {
                "event_id": "b",
                "event_type": "lead",
                "occurred_at": 1_795_000_000_000,
                "campaign_id": "y",
                "lead_id": "L",
            }
        ],
        {"event_type": "nonsense"},
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    with EmbeddedBroker() as broker:
        result = cli("send", str(path), "--broker", broker.url)
        clicks = asyncio.run(read_topic(broker.bootstrap, "marketing.clicks", 1))
        leads = asyncio.run(read_topic(broker.bootstrap, "marketing.leads", 1))
    assert result.returncode == 1 and "events.jsonl:3" in result.stderr  # the unroutable line
    assert [r.key for r in clicks] == [b"x"] and [r.key for r in leads] == [b"y"]
    assert orjson.loads(leads[0].value)[0]["lead_id"] == "L"


def test_alert_sink_prints_received_alerts():
    import os
    import time
    import urllib.request

    from agents.broker import free_port, stop_process

    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "alert-sink", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        body = orjson.dumps(
            {
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {
                            "alertname": "KpiCtrCollapse",
                            "campaign": "camp-03",
                            "severity": "page",
                        },
                        "annotations": {"summary": "CTR collapsed"},
                    }
                ]
            }
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/alerts",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "alert sink did not start"
                time.sleep(0.2)
        line = orjson.loads(sink.stdout.readline())
    finally:
        stop_process(sink)
    assert line == {
        "status": "firing",
        "alertname": "KpiCtrCollapse",
        "campaign": "camp-03",
        "severity": "page",
        "summary": "CTR collapsed",
    }


PLANS_CSV = """campaign_id,channel,target_cpa,target_ctr,daily_budget,flight_start,flight_end,timezone,owner
spring-sale,,40,0.02,500,2026-11-01,2026-12-31,Europe/Berlin,ana
,display,,0.002,,,,,
bad-ctr,,,2%,,,,,
autumn,,25,,,,,America/New_York,bo
"""


def test_plans_load_show_and_remove(tmp_path):
    """A CSV with a bad row: the row is named with its line, the good ones published (a channel
    default to every partition); show reads back what is in force; remove tombstones one."""
    path = tmp_path / "plans.csv"
    path.write_text(PLANS_CSV)
    with EmbeddedBroker() as broker:
        checked = cli("plans", "load", str(path), "--dry-run", "--broker", broker.url)
        assert checked.returncode == 1 and "nothing published" in checked.stdout
        loaded = cli("plans", "load", str(path), "--broker", broker.url)
        assert loaded.returncode == 1, loaded.stderr
        assert f"{path}:4: targets.ctr must be a number" in loaded.stderr
        assert "2 campaign plans and 1 channel defaults; 1 rows refused" in loaded.stdout
        records = asyncio.run(read_topic(broker.bootstrap, "marketing.campaign-plans", 12))
        by_key: dict[bytes, set[int]] = {}
        for record in records:
            by_key.setdefault(record.key, set()).add(record.partition)
        # Every partition folds a copy: a plan is where its campaign's events are, whatever
        # partitioner their producers use.
        assert by_key[b"\x00channel:display"] == {0, 1, 2, 3}
        assert by_key[b"spring-sale"] == {0, 1, 2, 3}

        shown = cli("plans", "show", "--json", "--broker", broker.url)
        assert shown.returncode == 0, shown.stderr
        plans = [orjson.loads(line) for line in shown.stdout.splitlines()]
        assert [p.get("campaign_id") or p["channel"] for p in plans] == [
            "display",
            "autumn",
            "spring-sale",
        ]
        assert plans[2]["targets"] == {"cpa": 40.0, "ctr": 0.02}
        assert plans[2]["labels"] == {"owner": "ana"}

        removed = cli("plans", "remove", "autumn", "--broker", broker.url)
        assert removed.returncode == 0, removed.stderr
        one = cli("plans", "show", "autumn", "--broker", broker.url)
        assert one.returncode == 1 and "no plan of its own" in one.stdout
        kept = cli("plans", "show", "spring-sale", "--broker", broker.url)
        assert "spring-sale  cpa=40  ctr=0.02  daily budget=500" in kept.stdout
