"""Ops files: generated ones up to date, rules validated, Grafana files checked statically, and
Prometheus/Alertmanager/compose files checked by the real tools (promtool, amtool, docker-compose)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from rulebook.alerting import DATASOURCE_UID
from rulebook.generate import DASHBOARDS, GRAFANA_ALERTING, PROMETHEUS_RULES, RULES_SOURCE, render
from rulebook.rules import RuleError, parse_rules
from tests.tools import run, tool

ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_up_to_date():
    for path, text in render(ROOT).items():
        assert (ROOT / path).read_text() == text, (
            f"{path} is stale: run `kpi-monitor rules generate`"
        )


def test_every_default_rule_is_shipped():
    names = {r.name for r in parse_rules(yaml.safe_load((ROOT / RULES_SOURCE).read_text()))}
    assert names == {
        "records_failing",
        "local_store_fallback",
        "ctr_collapse",
        "conversion_drop",
        "response_time_p95_sla",
        "oldest_uncontacted_lead_sla",
        "campaign_silence",
        "cpa_over_target",
        "roas_under_target",
        "worker_down",
        "consumer_lag_growing",
        "rejected_share_high",
        "late_share_high",
        "campaign_budget_nearly_full",
        "autopause_breaker_open",
        "campaign_split_across_partitions",
        "autopause_pauser_held",
        "overspend_pacing",
        "under_delivery",
        "daily_budget_spent",
        "spend_outside_flight",
        "stop_loss",
        "ctr_below_normal",
    }


GOOD = {
    "name": "r",
    "summary": "s",
    "severity": "page",
    "kpi": "ctr",
    "window": "15m",
    "op": "<",
    "threshold": 0.01,
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "Bad-Name"}, "name"),
        ({"kpi": "ctrr"}, "rule r.kpi"),
        ({"op": "<="}, "rule r.op"),
        ({"threshold": "low"}, "rule r.threshold"),
        ({"window": "15 minutes"}, "rule r.window"),
        ({"severity": "urgent"}, "rule r.severity"),
        ({"kpi": "cpa", "confident": True}, "rule r.confident"),
        ({"min_volume": {"event_type": "view", "count": 5}}, "rule r.min_volume"),
        ({"campaigns": "("}, "rule r.campaigns"),
        ({"tresholds": 1}, "unknown field"),
        ({"kind": "pipeline"}, "rule r.expr"),
        ({"cooldown": "1h"}, "only apply to rules with may_pause"),
        (
            {"may_pause": True, "resume_threshold": 0.005},
            "rule r.resume_threshold: must be at or above",
        ),
        ({"may_pause": True, "max_cycles_per_day": 0}, "rule r.max_cycles_per_day"),
        ({"may_pause": True, "cooldown": "soon"}, "rule r.cooldown"),
        ({"kpi": "oldest_uncontacted_lead_age", "window": None, "settle": "10m"}, "rule r.settle"),
        ({"threshold": {"target": "cpa", "factor": 1}}, "cpa is a target for cpa, not ctr"),
        ({"threshold": {"target": "ctr", "factor": 0}}, "rule r.threshold.factor"),
        ({"threshold": {"target": "reach"}}, "rule r.threshold.target"),
        ({"threshold": {"factor": 2}}, "rule r.threshold"),
        (
            {"threshold": {"target": "ctr"}, "may_pause": True, "resume_threshold": 0.01},
            "rule r.resume_threshold: the threshold is relative to ctr",
        ),
        (
            {
                "threshold": {"target": "ctr"},
                "may_pause": True,
                "resume_threshold": {"target": "ctr", "factor": 0.5},
            },
            "rule r.resume_threshold: must be at or above",
        ),
        ({"kpi": "response_p95", "window": "7d"}, "trailing windows only, not 7d"),
        (
            {"threshold": {"baseline": {"same_hour_of_week": "6w"}, "factor": 0.5}},
            "rule r.threshold.baseline: same_hour_of_week: 1w to 4w",
        ),
        (
            {"threshold": {"baseline": {"trailing": "7d"}, "target": "ctr"}},
            "rule r.threshold: a number, {target",
        ),
        (
            {"window": "15m", "threshold": {"baseline": {"trailing": "7d"}}},
            "rule r.window: a baseline compares a trailing window of whole hours",
        ),
        (
            {"window": "today", "threshold": {"baseline": {"trailing": "7d"}}},
            "rule r.window: a baseline compares",
        ),
        (
            {"kpi": "response_p95", "window": "1h", "threshold": {"baseline": {"trailing": "7d"}}},
            "rule r.threshold.baseline: a baseline is of sums",
        ),
        (
            {
                "window": "1h",
                "threshold": {"baseline": {"trailing": "7d"}, "factor": 0.5},
                "may_pause": True,
                "resume_threshold": 0.01,
            },
            "rule r.resume_threshold: the threshold is relative to a baseline",
        ),
        (
            {
                "window": "1h",
                "threshold": {"baseline": {"trailing": "7d"}, "factor": 0.5},
                "settle": "10m",
            },
            "rule r.settle: a baseline is judged",
        ),
        ({"window": "7d", "settle": "1h"}, "rule r.settle: the long horizons"),
        ({"kpi": "budget_pacing", "window": None, "after": "25h"}, "rule r.after"),
        ({"after": "3h"}, "only budget KPIs wait"),
        ({"kpi": "cpa", "window": "flight"}, "over the flight only revenue and spend"),
        ({"kpi": "sales_contacts", "window": "7d"}, "sales contacts are not counted over 7d"),
        (
            {
                "window": "15m",
                "min_volume": {"event_type": "click", "count": 5, "window": "flight"},
            },
            "rule r.min_volume: over the flight",
        ),
        (
            {"settle": "10m", "min_volume": {"event_type": "click", "count": 5, "window": "7d"}},
            "rule r.settle: the long horizons",
        ),
    ],
)
def test_bad_rules_fail_naming_the_field(change, message):
    with pytest.raises(RuleError, match=re.escape(message)):
        parse_rules({"rules": [{**GOOD, **change}]})


_ONE = {"kpi": "ctr", "window": "15m", "op": "<", "threshold": 0.01}
_TWO = {"kpi": "clicks", "window": "1h", "op": ">", "threshold": 100}
_HEAD = {"name": "r", "summary": "s", "severity": "page"}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"all": [_ONE, _TWO], "any": [_ONE, _TWO]}, "either all: or any:"),
        ({"all": [_ONE]}, "rule r.all: a list of two or more conditions"),
        ({"all": [_ONE, _TWO], "kpi": "ctr"}, "['kpi'] belong in the conditions of all:"),
        ({"any": [_ONE, "ctr < 1"]}, "rule r.any[1]: a mapping"),
        ({"all": [_ONE, {**_TWO, "for": "5m"}]}, "rule r.all[1]: unknown field(s) ['for']"),
        ({"all": [_ONE, {**_TWO, "op": "="}]}, "rule r.all[1].op"),
        (
            {"all": [_ONE, _TWO], "may_pause": True, "resume_threshold": 0.02},
            "a compound rule is resumed by a human",
        ),
        ({**_ONE, "action": "stop"}, "rule r.action: one of"),
        ({**_ONE, "action": "notify", "may_pause": True}, "a notify rule does not pause"),
        ({**_ONE, "pause_for": "rest_of_day"}, "only a rule with may_pause: true pauses"),
        ({**_ONE, "may_pause": True, "pause_for": "1h"}, "rule r.pause_for: one of"),
        (
            {**_ONE, "may_pause": True, "pause_for": "rest_of_day", "resume_threshold": 0.02},
            "the pause ends at midnight",
        ),
        (
            {"kpi": "ctr", "window": "15m", "op": "<", "threshold": {"target": "cpa"}},
            "cpa is a target for cpa, not ctr",
        ),
    ],
)
def test_bad_compound_rules_and_actions_fail_naming_the_field(fields, message):
    with pytest.raises(RuleError, match=re.escape(message)):
        parse_rules({"rules": [{**_HEAD, **fields}]})


def test_compound_rules_compile_to_one_series_per_campaign_joined_on_it():
    (both,) = parse_rules({"rules": [{**_HEAD, "all": [_ONE, _TWO]}]})
    assert both.condition() == (
        'max by (campaign) (campaign:kpi_ctr_ratio{window="15m"} < 0.01) and on (campaign) '
        'max by (campaign) (kpi_window_events{event_type="click",window="1h"} > 100)'
    )
    (either,) = parse_rules({"rules": [{**_HEAD, "any": [_ONE, _TWO]}]})
    assert " or on (campaign) " in either.condition()
    assert either.kpi == "ctr" and either.labels()["kpi"] == "ctr"
    # A money target bounds any money KPI: spend against the target CPA.
    (stop,) = parse_rules(
        {
            "rules": [
                {
                    **_HEAD,
                    "kpi": "spend",
                    "window": "today",
                    "op": ">",
                    "threshold": {"target": "cpa", "factor": 2},
                }
            ]
        }
    )
    assert stop.target == "cpa" and 'kpi_plan_target{kpi="cpa"}' in stop.condition()


def test_settle_reads_the_window_that_ended_that_long_ago():
    (rule,) = parse_rules(
        {"rules": [{**GOOD, "settle": "15m", "min_volume": {"event_type": "click", "count": 5}}]}
    )
    assert rule.condition() == (
        '(campaign:kpi_ctr_ratio{window="15m"} offset 15m < 0.01) and on (campaign) '
        '(kpi_window_events{event_type="click",window="15m"} offset 15m >= 5)'
    )


def test_confidence_and_volume_compile_to_promql():
    (rule,) = parse_rules(
        {
            "rules": [
                {
                    **GOOD,
                    "confident": True,
                    "campaigns": "brand-.*",
                    "min_volume": {"event_type": "impression", "count": 2000},
                }
            ]
        }
    )
    assert rule.condition() == (
        '(campaign:kpi_ctr_ratio_upper{window="15m",campaign=~"brand-.*"} < 0.01) and on (campaign) '
        '(kpi_window_events{event_type="impression",window="15m",campaign=~"brand-.*"} >= 2000)'
    )


# -- Grafana, statically ------------------------------------------------------------------------


def provisioned_datasource_uids() -> set[str]:
    doc = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    return {d["uid"] for d in doc["datasources"]}


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


@pytest.mark.parametrize("path", sorted(DASHBOARDS))
def test_dashboard_json_is_consistent(path):
    board = json.loads((ROOT / path).read_text())
    panels = [p for p in walk(board["panels"]) if "gridPos" in p]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    uids = {
        n["uid"]
        for n in walk(board)
        if isinstance(n.get("uid"), str) and n.get("type") == "prometheus"
    }
    assert uids == provisioned_datasource_uids() == {DATASOURCE_UID}
    for panel in panels:
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == DATASOURCE_UID and target["expr"]
    variables = {v["name"] for v in board["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(board))) - {"__rate_interval", "values", "labels"}
    assert used <= variables, used - variables


def test_dashboards_are_provisioned_from_their_folder():
    provider = yaml.safe_load(
        (ROOT / "grafana/provisioning/dashboards/kpi-monitor.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert (
        "./grafana/dashboards:/var/lib/grafana/dashboards:ro"
        in compose["services"]["grafana"]["volumes"]
    )


def test_grafana_alert_provisioning_format():
    doc = yaml.safe_load((ROOT / GRAFANA_ALERTING).read_text())
    assert doc["apiVersion"] == 1
    uids = []
    contact_points = {c["name"] for c in doc["contactPoints"]}
    for group in doc["groups"]:
        assert {"orgId", "name", "folder", "interval", "rules"} <= set(group)
        for rule in group["rules"]:
            uids.append(rule["uid"])
            assert len(rule["uid"]) <= 40 and re.fullmatch(r"[a-zA-Z0-9-_]+", rule["uid"])
            refs = {d["refId"] for d in rule["data"]}
            assert rule["condition"] in refs
            for data in rule["data"]:
                assert data["datasourceUid"] in provisioned_datasource_uids() | {"__expr__"}
                if data["datasourceUid"] == "__expr__":
                    assert data["model"]["expression"] in refs
            assert re.fullmatch(r"\d+[smhd]", rule["for"])
            assert rule["noDataState"] in ("OK", "NoData", "Alerting") and rule["execErrState"] in (
                "Error",
                "Alerting",
                "OK",
            )
    assert len(uids) == len(set(uids))
    for receiver in (r for c in doc["contactPoints"] for r in c["receivers"]):
        assert all("${KPI_ALERT_" in str(v) for v in receiver["settings"].values() if v != "POST")
    # The policy's receiver comes from the environment; compose defaults it to a contact point here.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    default = re.search(
        r":-([\w-]+)\}", compose["services"]["grafana"]["environment"]["KPI_ALERT_CONTACT_POINT"]
    )
    assert default and default.group(1) in contact_points


# -- real tools --------------------------------------------------------------------------------


def test_promtool_checks_rules_and_config(tmp_path):
    result = run(tool("promtool"), "check", "rules", str(ROOT / PROMETHEUS_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    # promtool checks that the token file exists: the one compose writes, here in tmp_path.
    config = (ROOT / "ops/prometheus/prometheus.yml").read_text()
    assert "credentials_file: /prometheus/kpi-web-token" in config
    (tmp_path / "kpi-web-token").write_text("test-only")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/prometheus/kpi-web-token", str(tmp_path / "kpi-web-token"))
    )
    shutil.copy(ROOT / PROMETHEUS_RULES, tmp_path / "kpi-alerts.rules.yml")
    result = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_for_every_default_rule():
    tests = ROOT / "ops/prometheus/tests/kpi-alerts.test.yml"
    covered = set(re.findall(r"alertname: (Kpi\w+)", tests.read_text()))
    shipped = {
        r["alert"]
        for g in yaml.safe_load((ROOT / PROMETHEUS_RULES).read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert covered == shipped
    for alert in shipped:  # each rule is shown firing, and resolving later
        cases = [
            (_minutes(case["eval_time"]), bool(case["exp_alerts"]))
            for test in yaml.safe_load(tests.read_text())["tests"]
            for case in test["alert_rule_test"]
            if case["alertname"] == alert
        ]
        fired = [t for t, firing in cases if firing]
        assert fired and any(t > min(fired) and not firing for t, firing in cases), alert
    result = run(tool("promtool"), "test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


# (impressions, clicks, leads, sales, revenue, spend): zero denominators, p = 0, p = 1, a count
# above its trials (sales without tracked clicks), and ordinary volumes.
RECORDING_CASES = [
    (0, 0, 0, 0, 0.0, 0.0),
    (1000, 0, 0, 0, 0.0, 2.5),
    (10, 10, 10, 10, 99.5, 1.0),
    (3000, 6, 2, 1, 20.0, 7.25),
    (2500, 10, 0, 12, 1234.56, 0.01),
    (123456, 4321, 321, 21, 4321.5, 987.65),
]


def test_recording_rules_compute_what_the_worker_computes(tmp_path):
    """The ratios and Wilson bounds Prometheus records from the lean export equal the ones the
    worker computes (KPI_EXPORT=full, /kpis), case by case, on promtool."""
    from rulebook.recording import recorded
    from stream.kpis import RATIOS, compute_kpis
    from stream.wilson import wilson_bounds

    series, expected = [], []
    kinds = ("impression", "click", "lead", "sale")
    for i, (*counts, revenue, spend) in enumerate(RECORDING_CASES):
        labels = f'campaign="c{i}",window="15m",job="kpi-monitor",instance="w1"'
        for kind, count in zip(kinds, counts):
            series.append(
                {
                    "series": f'kpi_window_events{{{labels},event_type="{kind}"}}',
                    "values": f"{count}x3",
                }
            )
        series.append({"series": f"kpi_window_revenue{{{labels}}}", "values": f"{revenue}x3"})
        series.append({"series": f"kpi_window_spend{{{labels}}}", "values": f"{spend}x3"})
        kpis = compute_kpis([*counts, 0], round(revenue * 1e6), round(spend * 1e6))
        for ratio, value in zip(RATIOS, kpis):
            expected.append((recorded(ratio.metric), i, value))
            if ratio.rate:
                bounds = wilson_bounds(
                    counts[kinds.index(ratio.numerator)], counts[kinds.index(ratio.denominator)]
                )
                for side, bound in zip(("lower", "upper"), bounds or (None, None)):
                    expected.append((recorded(f"{ratio.metric}_{side}"), i, bound))
    tests = []
    for metric in sorted({m for m, _, _ in expected}):
        samples = [
            {
                "labels": f'{metric}{{campaign="c{i}",window="15m",job="kpi-monitor",instance="w1"}}',
                "value": value,
            }
            for m, i, value in expected
            if m == metric and value is not None
        ]
        tests.append({"expr": metric, "eval_time": "2m", "exp_samples": samples})
    spec = {
        "rule_files": [str(ROOT / PROMETHEUS_RULES)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "recording.test.yml"
    path.write_text(yaml.safe_dump(spec))
    result = run(tool("promtool"), "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def _minutes(duration: str) -> int:
    assert duration.endswith("m")
    return int(duration[:-1])


def test_alertmanager_config_is_valid():
    result = run(tool("amtool"), "check-config", str(ROOT / "ops/alertmanager/alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid_and_pins_every_image():
    env = dict(os.environ, GRAFANA_ADMIN_PASSWORD="test-only", KPI_WEB_TOKEN="test-only")
    result = run(
        tool("docker-compose"),
        "-f",
        str(ROOT / "docker-compose.yml"),
        "--profile",
        "demo",
        "config",
        "-q",
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    for secret in ("GRAFANA_ADMIN_PASSWORD", "KPI_WEB_TOKEN"):
        missing = run(
            tool("docker-compose"),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
            "-q",
            env={k: v for k, v in env.items() if k != secret},
            cwd=ROOT,
        )
        assert missing.returncode != 0 and secret in missing.stderr
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image and re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), name
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert compose["services"]["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_a_rule_against_the_plan_compares_per_campaign_with_its_target():
    (rule,) = parse_rules(
        {
            "rules": [
                {
                    **GOOD,
                    "kpi": "cpa",
                    "window": "7d",
                    "op": ">",
                    "threshold": {"target": "cpa", "factor": 1.2},
                }
            ]
        }
    )
    assert rule.target == "cpa" and rule.threshold == 1.2 and rule.window == "7d"
    assert rule.condition() == (
        'campaign:kpi_cpa{window="7d"} > on (campaign) group_left () '
        '(1.2 * max by (campaign) (kpi_plan_target{kpi="cpa"}))'
    )


def test_a_pacing_rule_waits_for_the_first_hours_of_the_campaigns_day():
    (rule,) = parse_rules(
        {"rules": [{**GOOD, "kpi": "budget_pacing", "op": ">", "threshold": 1.5, "after": "3h"}]}
    )
    assert rule.condition() == (
        '(kpi_budget_pacing_ratio{period="daily"} > 1.5) and on (campaign) '
        "(kpi_day_elapsed_seconds >= 10800)"
    )
