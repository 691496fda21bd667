"""``kpi-monitor backtest`` on the embedded broker: an hour and a half of recorded traffic, judged
by a new rules file (it pauses the campaign whose CTR fell) and compared with an old one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.topics import ensure_topics
from stream.events import EVENT_TYPES
from stream.settings import Settings
from tests.e2e.harness import ROOT
from tests.e2e.test_e2e import broker  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e
MIN = 60_000
RULE = """
rules:
  - name: ctr_low
    summary: CTR under {threshold}
    kpi: ctr
    window: 15m
    op: "<"
    threshold: {threshold}
    min_volume: {{event_type: impression, count: 500}}
    for: 5m
    severity: page
    may_pause: true
"""


async def _record(bootstrap: str, settings: Settings, now: int) -> dict[int, int]:
    """90 minutes of traffic stamped in the past; camp-bad's CTR falls from 3% to 0.5% 30
    minutes ago. Returns the events sent, by minutes ago."""
    topics = dict(zip(EVENT_TYPES, settings.topics.inputs()))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    sent: dict[int, int] = {}
    try:
        for minute in range(90, 0, -1):
            at = now - minute * MIN
            for campaign, clicks in (("camp-bad", 1 if minute <= 30 else 6), ("camp-good", 6)):
                for event_type, count in (("impression", 200), ("click", clicks)):
                    body = [
                        {
                            "event_id": f"{campaign}-{event_type}-{minute}-{i}",
                            "event_type": event_type,
                            "occurred_at": at - 500,
                            "campaign_id": campaign,
                        }
                        for i in range(count)
                    ]
                    await producer.send(
                        topics[event_type],
                        orjson.dumps(body),
                        key=campaign.encode(),
                        timestamp_ms=at,
                    )
                    sent[minute] = sent.get(minute, 0) + count
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def _backtest(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", "backtest", "--broker", url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_backtest_prints_what_new_rules_would_have_decided_and_what_differs(broker, tmp_path):  # noqa: F811
    settings = Settings(broker=broker.url)
    asyncio.run(ensure_topics(settings))
    sent = asyncio.run(_record(broker.bootstrap, settings, int(time.time() * 1000)))
    new, old = tmp_path / "new.yaml", tmp_path / "old.yaml"
    new.write_text(RULE.format(threshold=0.02))  # catches a CTR of 0.5%
    old.write_text(RULE.format(threshold=0.004))  # does not

    judged = _backtest(broker.url, "--rules", str(new), "--since", "1h")
    assert judged.returncode == 0, judged.stderr
    lines = judged.stdout.splitlines()
    decided = [line.split() for line in lines if line.startswith("  20")]  # "  <date> <time> ..."
    paused = [" ".join(words) for words in decided if words[2] == "pause"]
    assert len(decided) == len(paused) == 1 and "camp-bad" in paused[0], judged.stdout
    assert "ctr=" in paused[0] and "< 0.02 on 15m" in paused[0]
    assert any("ctr_low" in line and "pause 1 [1]" in line for line in lines), judged.stdout
    assert "camp-good" not in judged.stdout
    # The hour judged and the 15 minutes of warm-up its window needs, not the older ones.
    read = int(judged.stderr.split(" events, ")[0].rsplit("(", 1)[1].replace(",", ""))
    assert (
        sum(n for m, n in sent.items() if m < 75)
        <= read
        <= sum(n for m, n in sent.items() if m <= 75)
    ), judged.stderr
    assert "%" in judged.stderr  # the progress line

    as_json = _backtest(broker.url, "--rules", str(new), "--since", "1h", "--json")
    decisions = [orjson.loads(line) for line in as_json.stdout.splitlines()]
    assert [(d["campaign_id"], d["verdict"], d["mode"]) for d in decisions] == [
        ("camp-bad", "pause", "backtest")
    ]
    # Its CTR fell 30 minutes ago: the 15-minute window, then 5 minutes of ``for``.
    issued = decisions[0]["issued_at_ms"]
    assert time.time() * 1000 - 30 * MIN < issued < time.time() * 1000

    compared = _backtest(
        broker.url, "--rules", str(new), "--compare", str(old), "--since", "1h", "--json"
    )
    assert compared.returncode == 0, compared.stderr
    differ = [orjson.loads(line) for line in compared.stdout.splitlines()]
    assert [(d["only_in"], d["campaign_id"], d["verdict"]) for d in differ] == [
        ("new", "camp-bad", "pause")
    ]

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    kpi: ctr\n")
    refused = _backtest(broker.url, "--rules", str(bad))
    assert refused.returncode == 2 and "bad.yaml" in refused.stderr
