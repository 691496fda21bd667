"""Grafana dashboards as data: the live ops dashboard and the one-campaign drill-down.

Built in code so panel ids stay unique, every query names the provisioned datasource, and the
thresholds shown come from the same rules file as the alerts. ``kpi-monitor rules generate`` writes
them to grafana/dashboards/; the tests run every query they hold against a live Prometheus.
"""

from __future__ import annotations

from typing import Any

from .alerting import DATASOURCE_UID
from .rules import Rule

DS = {"type": "prometheus", "uid": DATASOURCE_UID}


class _Layout:
    def __init__(self) -> None:
        self.next_id = 1
        self.y = 0
        self.x = 0
        self.row_height = 0
        self.panels: list[dict] = []

    def add(self, panel: dict, width: int, height: int) -> None:
        if self.x + width > 24:
            self.x, self.y = 0, self.y + self.row_height
            self.row_height = 0
        panel["id"] = self.next_id
        self.next_id += 1
        panel["gridPos"] = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        self.panels.append(panel)

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y = 0, self.y + self.row_height
        self.add({"type": "row", "title": title, "collapsed": False, "panels": []}, 24, 1)
        self.x, self.y, self.row_height = 0, self.y + 1, 0


def _target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, table: bool = False) -> dict:
    target: dict[str, Any] = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend}
    if instant:
        target["instant"] = True
        target["range"] = False
    if table:
        target["format"] = "table"
    return target


def _timeseries(title: str, targets: list[dict], unit: str = "short", thresholds: list | None = None) -> dict:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return {"type": "timeseries", "title": title, "datasource": DS, "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "right"},
                        "tooltip": {"mode": "multi"}}}


def _steps(good: str, bad: str, threshold: float | None, below_is_bad: bool) -> list[dict]:
    if threshold is None:
        return [{"color": good, "value": None}]
    if below_is_bad:
        return [{"color": bad, "value": None}, {"color": good, "value": threshold}]
    return [{"color": good, "value": None}, {"color": bad, "value": threshold}]


def _threshold(rules: list[Rule], kpi: str) -> float | None:
    for rule in rules:
        if rule.kind == "kpi" and rule.kpi == kpi:
            return rule.threshold
    return None


def _variables(multi_campaign: bool) -> list[dict]:
    campaign = {"name": "campaign", "label": "Campaign", "type": "query", "datasource": DS,
                "query": {"query": "label_values(kpi_events_total, campaign)", "refId": "campaign"},
                "definition": "label_values(kpi_events_total, campaign)", "refresh": 2,
                "multi": multi_campaign, "includeAll": multi_campaign, "sort": 1}
    if multi_campaign:
        campaign["allValue"] = ".*"
    channel = {"name": "channel", "label": "Channel", "type": "query", "datasource": DS,
               "query": {"query": "label_values(kpi_channel_events_total, channel)",
                         "refId": "channel"},
               "definition": "label_values(kpi_channel_events_total, channel)",
               "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*"}
    window = {"name": "window", "label": "Window", "type": "custom", "query": "5m,15m,1h",
              "current": {"text": "15m", "value": "15m"},
              "options": [{"text": w, "value": w, "selected": w == "15m"} for w in ("5m", "15m", "1h")]}
    return [campaign, channel, window]


def _dashboard(uid: str, title: str, layout: _Layout, multi_campaign: bool, links: list[dict]) -> dict:
    return {
        "uid": uid, "title": title, "tags": ["kpi-monitor"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": _variables(multi_campaign)},
        "annotations": {"list": []}, "links": links, "panels": layout.panels,
    }


def ops_dashboard(rules: list[Rule]) -> dict:
    lay = _Layout()
    sel = 'campaign=~"$campaign",window="$window"'
    lay.row("Campaigns")
    table_targets = [
        _target(f"campaign:kpi_ctr_ratio{{{sel}}}", ref="CTR", instant=True, table=True),
        _target(f"campaign:kpi_conversion_ratio{{{sel}}}", ref="Conversion", instant=True, table=True),
        _target(f"kpi_sales_response_p95_seconds{{{sel}}}", ref="Response p95", instant=True, table=True),
        _target(f"campaign:kpi_roas_ratio{{{sel}}}", ref="ROAS", instant=True, table=True),
        _target(f'kpi_window_events{{event_type="impression",{sel}}}', ref="Impressions", instant=True,
                table=True),
        _target('count by (campaign) (ALERTS{alertstate="firing",campaign=~"$campaign"})', ref="Firing",
                instant=True, table=True),
    ]
    overrides = []
    for column, unit, kpi, below_is_bad in (("Value #CTR", "percentunit", "ctr", True),
                                             ("Value #Conversion", "percentunit", "conversion", True),
                                             ("Value #Response p95", "s", "response_p95", False),
                                             ("Value #ROAS", "short", "roas", True)):
        overrides.append({"matcher": {"id": "byName", "options": column}, "properties": [
            {"id": "unit", "value": unit},
            {"id": "thresholds", "value": {"mode": "absolute",
                                           "steps": _steps("green", "red", _threshold(rules, kpi), below_is_bad)}},
            {"id": "custom.cellOptions", "value": {"type": "color-background"}}]})
    overrides.append({"matcher": {"id": "byName", "options": "Value #Firing"}, "properties": [
        {"id": "thresholds", "value": {"mode": "absolute", "steps": _steps("green", "red", 1, False)}},
        {"id": "custom.cellOptions", "value": {"type": "color-background"}}]})
    lay.add({"type": "table", "title": "Campaigns ($window window)", "datasource": DS,
             "targets": table_targets,
             "transformations": [{"id": "merge", "options": {}},
                                 {"id": "organize", "options": {"excludeByName": {"Time": True, "window": True,
                                                                                  "__name__": True,
                                                                                  "instance": True, "job": True}}}],
             "fieldConfig": {"defaults": {}, "overrides": overrides},
             "options": {"showHeader": True, "sortBy": [{"displayName": "Value #CTR", "desc": False}]}},
            16, 10)
    lay.add({"type": "alertlist", "title": "Firing alerts",
             "options": {"alertListOptions": {}, "stateFilter": {"firing": True, "pending": True},
                         "viewMode": "list", "showInstances": True, "maxItems": 50,
                         "alertInstanceLabelFilter": "", "folder": None, "groupMode": "default",
                         "sortOrder": 1}}, 8, 10)
    lay.row("KPIs over time")
    for title, metric, unit, kpi, below_is_bad in (
            ("CTR", "campaign:kpi_ctr_ratio", "percentunit", "ctr", True),
            ("Conversion rate", "campaign:kpi_conversion_ratio", "percentunit", "conversion", True),
            ("Lead rate", "campaign:kpi_lead_ratio", "percentunit", None, True),
            ("Lead-to-sale rate", "campaign:kpi_lead_to_sale_ratio", "percentunit", None, True),
            ("Sales response p95", "kpi_sales_response_p95_seconds", "s", "response_p95", False),
            ("CPA", "campaign:kpi_cpa", "currencyUSD", "cpa", False),
            ("ROAS", "campaign:kpi_roas_ratio", "short", "roas", True),
            ("CPC", "campaign:kpi_cpc", "currencyUSD", None, False)):
        threshold = _threshold(rules, kpi) if kpi else None
        lay.add(_timeseries(f"{title} ($window)", [_target(f"{metric}{{{sel}}}", "{{campaign}}")], unit,
                            _steps("green", "red", threshold, below_is_bad) if threshold is not None else None),
                12, 8)
    lay.add(_timeseries("Oldest uncontacted lead", [
        _target('kpi_oldest_uncontacted_lead_age_seconds{campaign=~"$campaign"}', "{{campaign}}")], "s",
        _steps("green", "red", _threshold(rules, "oldest_uncontacted_lead_age"), False)), 12, 8)
    lay.add(_timeseries("Events/s by channel (all campaigns)", [
        _target('sum by (channel) (rate(kpi_channel_events_total{channel=~"$channel"}[$__rate_interval]))',
                "{{channel}}")], "ops"), 12, 8)
    lay.row("Pipeline")
    lay.add(_timeseries("Events/s by type", [
        _target("sum by (event_type) (rate(kpi_events_total[$__rate_interval]))", "{{event_type}}")], "ops"), 8, 8)
    lay.add(_timeseries("Consumer lag", [
        _target("sum by (instance, topic) (kpi_consumer_lag_messages)", "{{instance}} {{topic}}")], "short"), 8, 8)
    lay.add(_timeseries("Rejected / late / duplicate per second", [
        _target("sum by (reason) (rate(kpi_events_rejected_total[$__rate_interval]))", "rejected {{reason}}"),
        _target("sum(rate(kpi_events_late_total[$__rate_interval]))", "late", ref="B"),
        _target("sum(rate(kpi_events_duplicate_total[$__rate_interval]))", "duplicate", ref="C"),
        _target('sum(rate(kpi_events_folded_total{budget="campaign"}[$__rate_interval]))',
                "folded into __other__", ref="D")], "ops"), 8, 8)
    lay.add({"type": "stat", "title": "Workers up", "datasource": DS,
             "targets": [_target('sum(up{job="kpi-monitor"})', instant=True)],
             "fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": _steps("green", "red", 1, True)}},
                             "overrides": []}}, 6, 5)
    lay.add({"type": "stat", "title": "Partitions owned", "datasource": DS,
             "targets": [_target("sum(kpi_partitions_owned)", instant=True)],
             "fieldConfig": {"defaults": {}, "overrides": []}}, 6, 5)
    lay.add({"type": "stat", "title": "Campaign budget used", "datasource": DS,
             "targets": [_target("sum(kpi_campaigns_tracked) / sum(kpi_campaign_budget)", instant=True)],
             "fieldConfig": {"defaults": {"unit": "percentunit",
                                          "thresholds": {"mode": "absolute",
                                                         "steps": _steps("green", "red", 0.9, False)}},
                             "overrides": []}}, 6, 5)
    lay.add(_timeseries("Sales response p95, all campaigns (1h)", [
        _target("histogram_quantile(0.95, sum by (le) (rate(kpi_sales_response_seconds_bucket[1h])))",
                "p95")], "s"), 6, 5)
    lay.add(_timeseries("Batch time p95", [
        _target("histogram_quantile(0.95, sum by (le, instance) (rate(kpi_batch_duration_seconds_bucket[$__rate_interval])))",
                "{{instance}}")], "s"), 6, 5)
    links = [{"title": "Campaign drill-down", "type": "link", "url": "/d/kpi-campaign/kpi-campaign?${campaign:queryparam}"}]
    return _dashboard("kpi-ops", "kpi-monitor: live ops", lay, True, links)


def campaign_dashboard(rules: list[Rule]) -> dict:
    lay = _Layout()
    sel = 'campaign="$campaign",window="$window"'
    lay.row("Now")
    for title, expr, unit in (
            ("CTR", f"campaign:kpi_ctr_ratio{{{sel}}}", "percentunit"),
            ("Conversion", f"campaign:kpi_conversion_ratio{{{sel}}}", "percentunit"),
            ("Response p95", f"kpi_sales_response_p95_seconds{{{sel}}}", "s"),
            ("ROAS", f"campaign:kpi_roas_ratio{{{sel}}}", "short"),
            ("Spend", f"kpi_window_spend{{{sel}}}", "currencyUSD"),
            ("Revenue", f"kpi_window_revenue{{{sel}}}", "currencyUSD")):
        lay.add({"type": "stat", "title": f"{title} ($window)", "datasource": DS,
                 "targets": [_target(expr, instant=True)],
                 "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}}, 4, 4)
    lay.row("Over time")
    lay.add(_timeseries("CTR with 95% bounds", [
        _target(f"campaign:kpi_ctr_ratio{{{sel}}}", "CTR"),
        _target(f"campaign:kpi_ctr_ratio_lower{{{sel}}}", "lower", ref="B"),
        _target(f"campaign:kpi_ctr_ratio_upper{{{sel}}}", "upper", ref="C")], "percentunit",
        _steps("green", "red", _threshold(rules, "ctr"), True)), 12, 8)
    lay.add(_timeseries("Conversion with 95% bounds", [
        _target(f"campaign:kpi_conversion_ratio{{{sel}}}", "conversion"),
        _target(f"campaign:kpi_conversion_ratio_lower{{{sel}}}", "lower", ref="B"),
        _target(f"campaign:kpi_conversion_ratio_upper{{{sel}}}", "upper", ref="C")], "percentunit"), 12, 8)
    lay.add(_timeseries("Events/s by type", [
        _target('sum by (event_type) (rate(kpi_events_total{campaign="$campaign"}[$__rate_interval]))',
                "{{event_type}}")], "ops"), 12, 8)
    lay.add(_timeseries("Sales response time", [
        _target(f"kpi_sales_response_p50_seconds{{{sel}}}", "p50"),
        _target(f"kpi_sales_response_p95_seconds{{{sel}}}", "p95", ref="B")], "s"), 12, 8)
    lay.add(_timeseries("Leads awaiting first contact", [
        _target('kpi_leads_awaiting_contact{campaign="$campaign"}', "waiting"),
        _target('kpi_oldest_uncontacted_lead_age_seconds{campaign="$campaign"}', "oldest age (s)", ref="B"),
        _target('kpi_sales_contacts_unmatched{campaign="$campaign"}', "contacts without lead", ref="C")]), 12, 8)
    lay.add(_timeseries("Spend, revenue, CPA", [
        _target(f"kpi_window_spend{{{sel}}}", "spend"),
        _target(f"kpi_window_revenue{{{sel}}}", "revenue", ref="B"),
        _target(f"campaign:kpi_cpa{{{sel}}}", "CPA", ref="C")], "currencyUSD"), 12, 8)
    lay.add({"type": "table", "title": "Alerts for this campaign", "datasource": DS,
             "targets": [_target('ALERTS{campaign="$campaign"}', instant=True, table=True)],
             "fieldConfig": {"defaults": {}, "overrides": []}}, 12, 8)
    links = [{"title": "Back to ops", "type": "link", "url": "/d/kpi-ops/kpi-ops"}]
    return _dashboard("kpi-campaign", "kpi-monitor: campaign", lay, False, links)
