"""The shipped forms of judgement end to end, on the embedded broker: a campaign whose CTR halves
against its own weekday-hour normal (while above any fixed line) is paused and a new one is not
judged; a stop-loss conjunction pauses a campaign for the rest of its day, and the worker revives
it at its midnight (the worker's clock runs ahead under libfaketime so that midnight comes soon)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml

from autopause.runner import SHIPPED_RULES
from stream.settings import Topics
from tests.e2e.harness import read_topic, total, wait_for
from tests.e2e.test_e2e import broker, ev, msg, produce, workers  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e
DECISIONS = "marketing.kpi-decisions"
HOUR_MS = 3_600_000
WEEK_MS = 7 * 24 * HOUR_MS


def _rules(tmp_path, name: str) -> str:
    """The shipped rule ``name``, judged after 2 s instead of minutes."""
    shipped = yaml.safe_load(SHIPPED_RULES.read_text())
    (rule,) = [dict(r, **{"for": "2s"}) for r in shipped["rules"] if r["name"] == name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"rules": [rule]}))
    return str(path)


def _decisions(running, expected: int, timeout: float) -> list[dict]:
    records = asyncio.run(read_topic(running.bootstrap, DECISIONS, expected, timeout))
    return [orjson.loads(r.value) for r in records]


def _serving(worker) -> None:
    assert wait_for(lambda: worker.try_metrics(), 60, "the worker serving /metrics")


def _ctr_traffic(campaign: str, at_ms: int, impressions: int, clicks: int) -> list:
    return [
        msg([ev("impression", campaign, at_ms) for _ in range(1000)])
        for _ in range(impressions // 1000)
    ] + [msg([ev("click", campaign, at_ms) for _ in range(clicks)])]


def test_ctr_halving_against_its_weekday_hour_normal_is_paused(broker, workers, tmp_path):  # noqa: F811
    worker = workers(
        broker.url,
        "normal",
        KPI_RULES=_rules(tmp_path, "ctr_below_normal"),
        KPI_DECISION_INTERVAL="1s",
    )
    _serving(worker)
    now = int(time.time() * 1000)
    top = now - now % HOUR_MS
    history = []
    for week in (4, 3, 2, 1):  # the hours around this one, in each of the last four weeks
        for hour in (-2, -1, 0, 1):
            at = top - week * WEEK_MS + hour * HOUR_MS + 1_800_000
            history += _ctr_traffic("usual", at, 4000, 16)  # its normal here: 0.4%
    asyncio.run(produce(broker.bootstrap, history))
    # Now 0.1% for both: above any fixed line a display portfolio could use, but under half of
    # the usual campaign's normal; the newcomer has no normal yet.
    now = int(time.time() * 1000)
    current = _ctr_traffic("usual", now, 20000, 20) + _ctr_traffic("newcomer", now, 20000, 20)
    asyncio.run(produce(broker.bootstrap, current))
    decisions = _decisions(broker, 1, 60)
    assert [(d["campaign_id"], d["verdict"], d["rule"]) for d in decisions] == [
        ("usual", "pause", "ctr_below_normal")
    ]
    evidence = decisions[0]["evidence"]
    assert evidence["threshold"] == pytest.approx(0.002)  # half of its 0.4%
    metrics = worker.metrics()
    labels = {"kpi": "ctr", "window": "1h", "baseline": "same_hour_of_week_4w"}
    assert total(metrics, "kpi_baseline", campaign="usual", **labels) == pytest.approx(0.004)
    assert total(metrics, "kpi_baseline", campaign="newcomer", **labels) == 0  # no series
    assert (
        total(metrics, "kpi_autopause_campaigns", rule="ctr_below_normal", state="no_baseline") == 1
    )


def test_a_stop_loss_pauses_for_the_rest_of_the_day_and_revives_at_midnight(
    broker,  # noqa: F811
    workers,  # noqa: F811
    tmp_path,
):
    zone = ZoneInfo("Asia/Tokyo")
    real = time.time()
    local = datetime.fromtimestamp(real, zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)
    ahead = midnight.timestamp() - real - 75  # the worker's clock: 75 s before Tokyo's midnight
    worker = workers(
        broker.url,
        "stoploss",
        clock_ahead_s=ahead,
        KPI_RULES=_rules(tmp_path, "stop_loss"),
        KPI_DECISION_INTERVAL="1s",
    )
    _serving(worker)
    plans = [
        (
            Topics().plans,
            c.encode(),
            orjson.dumps({"campaign_id": c, "targets": {"cpa": 40}, "timezone": "Asia/Tokyo"}),
        )
        for c in ("burner", "selling")
    ]
    asyncio.run(produce(broker.bootstrap, plans))
    at = int((time.time() + ahead) * 1000)  # the worker's now
    spend = [
        msg([ev(kind, c, at, cost=cost) for _ in range(10)])
        for c in ("burner", "selling")
        for kind, cost in (("impression", 0.01), ("click", 10.0))
    ]
    sale = [msg([ev("sale", "selling", at, value=25.0, currency="USD")])]
    asyncio.run(produce(broker.bootstrap, plans + spend + sale))
    decided = _decisions(broker, 1, 45)
    assert decided, worker.get("/kpis").decode()[:3000]
    (pause,) = decided
    assert (pause["campaign_id"], pause["verdict"], pause["rule"]) == (
        "burner",
        "pause",
        "stop_loss",
    )
    assert pause["resume_at_ms"] == int(midnight.timestamp() * 1000)
    assert [c["holds"] for c in pause["evidence"]["conditions"]] == [True, True]
    # Past Tokyo's midnight on the worker's clock: the resume, whatever today's figures are.
    pause_then_resume = _decisions(broker, 2, 120)
    resume = pause_then_resume[1]
    assert (resume["campaign_id"], resume["verdict"]) == ("burner", "resume")
    assert resume["issued_at_ms"] >= int(midnight.timestamp() * 1000)
