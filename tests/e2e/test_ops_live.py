"""The ops stack for real: worker + demo incident traffic + Prometheus + Alertmanager + webhook.

The CTR-collapse alert for the incident campaign must reach the webhook, no KPI alert may fire for
a healthy campaign, and every PromQL expression of the dashboards and alert rules must run.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml

from agents.broker import EmbeddedBroker
from agents.demo import CTR_COLLAPSE_CAMPAIGN
from rulebook.alerting import prometheus_rule_file
from rulebook.generate import DASHBOARDS, GRAFANA_ALERTING, PROMETHEUS_RULES
from rulebook.rules import parse_rules
from tests.e2e.harness import (
    CTR_COLLAPSE_TEST_RULES,
    ROOT,
    WorkerProcess,
    demo_traffic,
    wait_for,
)
from tests.e2e.ops_harness import Webhook, query, start_alertmanager, start_prometheus

pytestmark = pytest.mark.e2e
TOKEN = "e2e-token-0123456789"

TEST_RULES = CTR_COLLAPSE_TEST_RULES


def dashboard_queries() -> list[str]:
    exprs = []
    for path in DASHBOARDS:
        board = json.loads((Path(ROOT) / path).read_text())
        panels = [p for row in board["panels"] for p in [row, *row.get("panels", [])]]
        exprs += [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
        exprs += [
            v["query"]["query"] for v in board["templating"]["list"] if v.get("type") == "query"
        ]
    return exprs


def alert_queries() -> list[str]:
    prometheus = yaml.safe_load((Path(ROOT) / PROMETHEUS_RULES).read_text())
    grafana = yaml.safe_load((Path(ROOT) / GRAFANA_ALERTING).read_text())
    exprs = [r["expr"] for g in prometheus["groups"] for r in g["rules"]]
    exprs += [
        d["model"]["expr"]
        for g in grafana["groups"]
        for r in g["rules"]
        for d in r["data"]
        if d["datasourceUid"] != "__expr__"
    ]
    return exprs


def substitute(expr: str, campaign: str) -> str:
    """Grafana's template variables, as Grafana would expand them."""
    # label_values(selector, label) is Grafana's: it asks Prometheus for the label's values on
    # the series the selector matches, which is what this query returns.
    expr = re.sub(r"^label_values\((.+), (\w+)\)$", r"group by (\2) (\1)", expr)
    expr = expr.replace('campaign=~"$campaign"', 'campaign=~".*"')
    expr = expr.replace("$campaign", campaign).replace('channel=~"$channel"', 'channel=~".*"')
    return expr.replace("$window", "5m").replace("$__rate_interval", "1m")


@pytest.fixture
def stack(tmp_path):
    started = []
    with EmbeddedBroker() as broker:
        rules = tmp_path / "kpi-rules.yaml"
        rules.write_text(TEST_RULES)
        env = {
            "KPI_BUCKET": "10s",
            "KPI_WINDOWS": "1m,5m,15m,1h",
            "KPI_RULES": str(rules),
            "KPI_DECISION_INTERVAL": "1s",
        }
        os.environ.update(env)
        try:
            worker = WorkerProcess(
                broker.url, "ops-live", str(tmp_path / "worker.log"), token=TOKEN
            ).start()
        finally:
            for key in env:
                os.environ.pop(key)
        started.append(worker)
        yield broker, worker, started
        for item in reversed(started):
            item.stop()


def test_ctr_collapse_reaches_the_webhook_and_every_expression_runs(stack, tmp_path):
    broker, worker, started = stack
    webhook = Webhook()
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(
        yaml.safe_dump(
            prometheus_rule_file(
                parse_rules(yaml.safe_load(TEST_RULES))
                + [
                    r
                    for r in parse_rules(
                        yaml.safe_load((Path(ROOT) / "ops/kpi-rules.yaml").read_text())
                    )
                    if r.kind == "pipeline"
                ]
            )
        )
    )
    alertmanager, am_port = start_alertmanager(tmp_path, webhook.url)
    started.append(alertmanager)
    prometheus, prom_port = start_prometheus(
        tmp_path, [f"127.0.0.1:{worker.port}"], rule_file, am_port, token=TOKEN
    )
    started.append(prometheus)
    traffic_log = open(tmp_path / "traffic.log", "w")
    traffic = demo_traffic(broker.url, traffic_log)
    try:
        incident_at = wait_for(
            lambda: _incident_time(tmp_path / "traffic.log"), 60, "demo traffic start"
        )

        def ctr_alert():
            for at, alert in webhook.alerts():
                labels = alert["labels"]
                if labels.get("alertname") == "KpiCtrCollapse" and alert["status"] == "firing":
                    return at, labels
            return None

        received_at, labels = wait_for(ctr_alert, 360, "the CTR-collapse alert at the webhook", 1)
        delay = received_at - incident_at / 1000
        print(f"\nincident started -> webhook received KpiCtrCollapse: {delay:.1f} s")
        (tmp_path / "delay.txt").write_text(f"{delay:.1f}\n")
        assert labels["campaign"] == CTR_COLLAPSE_CAMPAIGN
        assert labels["severity"] == "page" and labels["may_pause"] == "true"
        # The plan's routing labels reach the receiver (the demo's email channel default).
        assert labels["team"] == "email" and labels["owner"] == "email-team@example.com"

        # The worker's own decision on the same rule: one pause, for that campaign only.
        def pause_decided():
            body = json.loads(worker.get("/decisions"))
            return body["campaigns"] or None

        campaigns = wait_for(pause_decided, 120, "a decision in /decisions", 1)
        assert list(campaigns) == [CTR_COLLAPSE_CAMPAIGN], campaigns
        decision = campaigns[CTR_COLLAPSE_CAMPAIGN]["ctr_collapse"]
        assert decision["verdict"] == "pause" and decision["mode"] == "live"
        evidence = decision["evidence"]
        assert evidence["target"] == "ctr" and evidence["factor"] == 0.25
        assert evidence["bound"] < evidence["threshold"] < 0.25 * 0.06  # a quarter of its target
        print(
            f"incident started -> pause decision issued: "
            f"{(decision['issued_at_ms'] - incident_at) / 1000:.1f} s"
        )
        changes = json.loads(worker.get("/decisions/changes?cursor=&wait=0"))
        assert [d["decision_id"] for d in changes["decisions"]] == [decision["decision_id"]]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=5)
        assert refused.value.code == 401  # the token is required; Prometheus had it

        kpi_alerts = {
            a["labels"].get("campaign") for _, a in webhook.alerts() if a["labels"].get("kpi")
        }
        assert kpi_alerts == {CTR_COLLAPSE_CAMPAIGN}, kpi_alerts  # no healthy campaign alerted
        pipeline = [
            a["labels"]["alertname"] for _, a in webhook.alerts() if not a["labels"].get("kpi")
        ]
        assert pipeline == [], pipeline

        # Every expression the dashboards and alert rules hold runs on real data without error,
        # and the ones about campaigns find data.
        # The worker's lean export keeps within its series budget; the bound that fired is
        # Prometheus's own recording of it.
        m = worker.metrics()
        per_campaign = Counter(dict(labels).get("campaign") for (_, labels) in m)
        per_campaign.pop(None, None)
        # 4 trailing windows here, 3 long horizons, and the demo's plans: 4 targets and routing
        # labels per channel default, and camp-11's daily budget (budget, used, pacing, day).
        assert len(per_campaign) >= 15
        assert max(per_campaign.values()) <= 5 + 4 * 9 + 3 + 3 * 6 + 4 + 1 + 4
        upper = query(
            prom_port,
            f'campaign:kpi_ctr_ratio_upper{{campaign="{CTR_COLLAPSE_CAMPAIGN}",window="1m"}}',
        )["data"]["result"]
        assert upper and float(upper[0]["value"][1]) < evidence["threshold"]
        failures = []
        for expr in dashboard_queries() + alert_queries():
            result = query(prom_port, substitute(expr, "camp-04"))
            if result.get("status") != "success":
                failures.append((expr, result.get("error")))
        assert failures == []
        ctr = query(
            prom_port,
            substitute('campaign:kpi_ctr_ratio{campaign=~"$campaign",window="$window"}', "x"),
        )
        assert len(ctr["data"]["result"]) >= 15
    finally:
        traffic.terminate()
        traffic.wait(timeout=10)
        traffic_log.close()
        webhook.stop()


def _incident_time(log: Path) -> int | None:
    match = re.search(r"incident_at_ms=(\d+)", log.read_text()) if log.exists() else None
    return int(match.group(1)) if match else None
