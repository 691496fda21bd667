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
