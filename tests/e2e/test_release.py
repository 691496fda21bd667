"""A hold released by an operator, end to end: a campaign that collapses, recovers and collapses
again within its day is held (``max_cycles_per_day: 1``); ``kpi-monitor autopause release`` asks
the real worker, which takes it back; the campaign is no longer held, a second release finds
nothing, and a worker that cannot be reached is said so."""

from __future__ import annotations

import asyncio
import io
import time

import orjson
import pytest

from agents.release_cli import release
from stream.settings import Settings
from tests.e2e.harness import WorkerProcess, read_topic, total, wait_for
from tests.e2e.test_e2e import broker, ev, msg, produce, workers  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e
DECISIONS = "marketing.kpi-decisions"
RULES = """
rules:
  - name: ctr_collapse
    summary: CTR collapsed
    kpi: ctr
    window: 10s
    op: "<"
    threshold: 0.005
    min_volume: {event_type: impression, count: 200}
    for: 1s
    cooldown: 0s
    max_cycles_per_day: 1
    severity: page
    may_pause: true
"""


def _minute(bootstrap: str, clicks: int) -> None:
    """One burst of the campaign's traffic, at the wall clock's now."""
    now = int(time.time() * 1000)
    body = [msg([ev("impression", "bad", now) for _ in range(300)])]
    if clicks:
        body.append(msg([ev("click", "bad", now) for _ in range(clicks)]))
    asyncio.run(produce(bootstrap, body))


def _traffic_until(bootstrap: str, clicks: int, done, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        _minute(bootstrap, clicks)
        time.sleep(0.5)


def _verdicts(bootstrap: str) -> list[str]:
    records = asyncio.run(read_topic(bootstrap, DECISIONS, 100, 2))
    return [orjson.loads(r.value)["verdict"] for r in records]


def _release(worker: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = asyncio.run(release(Settings(), "bad", None, [worker], out=out, err=err))
    return code, out.getvalue(), err.getvalue()


def test_an_operator_releases_a_held_campaign(broker, workers, tmp_path):  # noqa: F811
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    env = {
        "KPI_BUCKET": "1s",
        "KPI_WINDOWS": "10s,30s,60s",
        "KPI_RULES": str(rules),
        "KPI_DECISION_INTERVAL": "1s",
    }
    worker: WorkerProcess = workers(broker.url, "release", **env)
    url = f"http://127.0.0.1:{worker.port}"
    held = lambda: total(worker.try_metrics(), "kpi_autopause_campaigns", state="held")  # noqa: E731

    _traffic_until(broker.bootstrap, 0, lambda: "pause" in _verdicts(broker.bootstrap), 60, "pause")
    # Recovered: the collapsed seconds leave the 10s window and the rule re-arms (silently).
    _traffic_until(
        broker.bootstrap,
        30,
        lambda: total(worker.try_metrics(), "kpi_autopause_campaigns", state="paused") == 0,
        60,
        "the rule to re-arm",
    )
    _traffic_until(broker.bootstrap, 0, lambda: held() == 1, 60, "the hold")
    assert _verdicts(broker.bootstrap).count("hold") == 1

    code, out, err = _release(url)
    assert (code, err) == (0, ""), out
    assert f"{url}: released bad rule ctr_collapse" in out
    assert wait_for(lambda: held() == 0, 15, "the hold to end in kpi_autopause_campaigns")
    code, out, _ = _release(url)  # nothing held any more
    assert code == 1 and "no hold of bad here" in out
    code, _, err = _release("http://127.0.0.1:9")  # nothing listens there
    assert code == 2 and "not reached" in err
