"""Auto-pause decisions end to end: incident traffic on the embedded broker gives exactly one
pause for the bad campaign; a SIGKILLed and restarted worker issues no second one; a flood of
failing campaigns opens the breaker and pauses nothing."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.e2e.harness import WorkerProcess, read_topic, total, wait_for
from tests.e2e.test_e2e import broker, ev, msg, produce, workers  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e
DECISIONS = "marketing.kpi-decisions"
RULES = """
rules:
  - name: ctr_collapse
    summary: CTR collapsed
    kpi: ctr
    window: 30s
    op: "<"
    threshold: 0.005
    confident: true
    min_volume: {event_type: impression, count: 500}
    for: 2s
    severity: page
    may_pause: true
"""


def _env(tmp_path) -> dict[str, str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return {
        "KPI_BUCKET": "1s",
        "KPI_WINDOWS": "10s,30s,60s",
        "KPI_RULES": str(rules),
        "KPI_DECISION_INTERVAL": "1s",
    }


def _traffic(campaigns: dict[str, tuple[int, int]]) -> list:
    now = int(time.time() * 1000)
    messages = []
    for campaign, (impressions, clicks) in campaigns.items():
        messages.append(msg([ev("impression", campaign, now) for _ in range(impressions)]))
        if clicks:
            messages.append(msg([ev("click", campaign, now) for _ in range(clicks)]))
    return messages


def _decisions(running, expected: int, timeout: float) -> list[dict]:
    records = asyncio.run(read_topic(running.bootstrap, DECISIONS, expected, timeout))
    return [orjson.loads(r.value) for r in records]


def test_one_pause_for_the_bad_campaign_and_none_after_a_crash(broker, workers, tmp_path):  # noqa: F811
    env = _env(tmp_path)
    worker: WorkerProcess = workers(broker.url, "decide", **env)
    traffic = {"bad": (2000, 2), "good": (2000, 80), "small": (200, 0)}
    asyncio.run(produce(broker.bootstrap, _traffic(traffic)))
    decisions = _decisions(broker, 1, 60)
    assert [(d["campaign_id"], d["verdict"]) for d in decisions] == [("bad", "pause")]
    first = decisions[0]
    assert first["evidence"]["volume"] == {
        "event_type": "impression",
        "window": "30s",
        "count": 2000,
        "required": 500,
    }
    assert wait_for(
        lambda: (
            total(worker.try_metrics(), "kpi_decisions_total", rule="ctr_collapse", verdict="pause")
            == 1
        ),
        10,
        "kpi_decisions_total",
    )

    worker.kill()
    restarted = workers(broker.url, "decide", **env)
    wait_for(
        lambda: total(restarted.try_metrics(), "kpi_partitions_owned") == 4,
        60,
        "the restarted worker to own the partitions",
    )
    time.sleep(5)  # several decision ticks on the restored state
    after = _decisions(broker, 10, 5)
    assert {d["decision_id"] for d in after} == {first["decision_id"]}  # resends keep the id
    assert all(d["campaign_id"] == "bad" and d["verdict"] == "pause" for d in after)


def test_a_flood_of_failing_campaigns_opens_the_breaker(broker, workers, tmp_path):  # noqa: F811
    worker = workers(broker.url, "flood", **_env(tmp_path))
    failing = {f"camp-{i:02d}": (2000, 1) for i in range(12)}  # CTR upper bound 0.28%
    healthy = {f"ok-{i:02d}": (2000, 80) for i in range(4)}
    asyncio.run(produce(broker.bootstrap, _traffic(failing | healthy)))
    decisions = _decisions(broker, 12, 60)
    assert {d["campaign_id"] for d in decisions} == set(failing)
    assert {d["verdict"] for d in decisions} == {"suppressed"}
    assert all("*" in d["evidence"]["breaker_open"] for d in decisions)
    metrics = worker.metrics()
    assert total(metrics, "kpi_autopause_breaker_open", rule="ctr_collapse") == 1
    assert total(metrics, "kpi_decisions_total", verdict="pause") == 0
