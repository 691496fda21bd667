"""Render parsed KPI rules as a Prometheus rule file and as Grafana alerting provisioning.

Both are plain dicts, dumped to YAML by the CLI. The same PromQL drives both, so Prometheus (and
`promtool test rules`) test exactly what Grafana evaluates.
"""

from __future__ import annotations

from .recording import recording_rules
from .rules import Rule

DATASOURCE_UID = "kpi-prometheus"
GRAFANA_FOLDER = "kpi-monitor"
CONTACT_POINTS = ("kpi-webhook", "kpi-slack", "kpi-email")


def prometheus_rule_file(rules: list[Rule]) -> dict:
    groups = []
    for kind, group in (("kpi", "kpi-monitor-campaigns"), ("pipeline", "kpi-monitor-pipeline")):
        # The campaign alerts read the recorded ratios: record them first, in the same group, so
        # an evaluation alerts on the ratios of that same evaluation.
        entries = recording_rules() if kind == "kpi" else []
        for rule in rules:
            if rule.kind != kind:
                continue
            entry: dict[str, object] = {"alert": rule.alert_name, "expr": rule.expr()}
            if rule.for_ != "0s":
                entry["for"] = rule.for_
            entry["labels"] = rule.labels()
            entry["annotations"] = {k: v for k, v in rule.annotations().items() if v}
            entries.append(entry)
        if entries:
            groups.append({"name": group, "rules": entries})
    return {"groups": groups}


def _grafana_rule(rule: Rule) -> dict:
    return {
        "uid": f"kpi-{rule.name.replace('_', '-')}"[:40],
        "title": rule.alert_name,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": 600, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {
                    "refId": "A",
                    "expr": rule.expr(),
                    "instant": True,
                    "intervalMs": 1000,
                    "maxDataPoints": 43200,
                },
            },
            {
                "refId": "B",
                "datasourceUid": "__expr__",
                "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"},
            },
            # A returns a series only while the rule holds; any value (KPIs are >= 0) fires.
            {
                "refId": "C",
                "datasourceUid": "__expr__",
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": "gt", "params": [-1]}}],
                },
            },
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": rule.for_,
        "labels": rule.labels(),
        "annotations": {
            **{k: v for k, v in rule.annotations().items() if v},
            "value": "{{ $values.B }}",
        },
        "isPaused": False,
    }


def grafana_alerting(rules: list[Rule]) -> dict:
    """Grafana file-provisioning document: rule groups, contact points and the policy tree.

    Targets come from Grafana's environment at start-up (`$KPI_ALERT_*`, see docker-compose.yml).
    """
    groups = []
    for kind, name in (("kpi", "campaigns"), ("pipeline", "pipeline")):
        selected = [_grafana_rule(r) for r in rules if r.kind == kind]
        if selected:
            groups.append(
                {
                    "orgId": 1,
                    "name": name,
                    "folder": GRAFANA_FOLDER,
                    "interval": "1m",
                    "rules": selected,
                }
            )
    return {
        "apiVersion": 1,
        "groups": groups,
        "contactPoints": [
            {
                "orgId": 1,
                "name": "kpi-webhook",
                "receivers": [
                    {
                        "uid": "kpi-webhook",
                        "type": "webhook",
                        "settings": {"url": "${KPI_ALERT_WEBHOOK_URL}", "httpMethod": "POST"},
                    }
                ],
            },
            {
                "orgId": 1,
                "name": "kpi-slack",
                "receivers": [
                    {
                        "uid": "kpi-slack",
                        "type": "slack",
                        "settings": {
                            "url": "${KPI_ALERT_SLACK_WEBHOOK_URL}",
                            "recipient": "${KPI_ALERT_SLACK_CHANNEL}",
                        },
                    }
                ],
            },
            {
                "orgId": 1,
                "name": "kpi-email",
                "receivers": [
                    {
                        "uid": "kpi-email",
                        "type": "email",
                        "settings": {"addresses": "${KPI_ALERT_EMAIL_TO}"},
                    }
                ],
            },
        ],
        "policies": [
            {
                "orgId": 1,
                "receiver": "${KPI_ALERT_CONTACT_POINT}",
                "group_by": ["alertname", "campaign"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "4h",
                "routes": [
                    # A campaign's alerts carry its plan's owner and team: one route by team,
                    # to its own contact point, then on down the tree.
                    {
                        "receiver": "${KPI_ALERT_SEARCH_TEAM_CONTACT_POINT}",
                        "object_matchers": [["team", "=", "search"]],
                        "continue": True,
                    },
                    {
                        "receiver": "${KPI_ALERT_CONTACT_POINT}",
                        "object_matchers": [["severity", "=", "page"]],
                        "group_wait": "10s",
                        "repeat_interval": "1h",
                    },
                ],
            },
        ],
    }
