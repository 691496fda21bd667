"""Grafana dashboards as data: the live ops dashboard and the one-campaign drill-down.

Built in code so panel ids stay unique, every query names the provisioned datasource, and the
thresholds shown come from the same rules file as the alerts. ``kpi-monitor rules generate`` writes
them to grafana/dashboards/; the tests run every query they hold against a live Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream import catalogue as m
from stream.exposition import window_labels
from stream.horizons import HORIZONS
from stream.settings import Settings

from .alerting import DATASOURCE_UID
from .recording import recorded_ratio
from .rules import Rule

# The long horizons with counts (the flight has revenue and spend only: stream.exposition).
LONG_WINDOWS = tuple(h for h in HORIZONS if h != "flight")
TARGETED = ("ctr", "conversion", "cpa", "roas", "response_p95")  # KPIs with plan targets shown
CTR, CONVERSION, LEAD_RATE, LEAD_TO_SALE, ROAS, CPA, CPC = (
    recorded_ratio(k)
    for k in ("ctr", "conversion", "lead_rate", "lead_to_sale", "roas", "cpa", "cpc")
)
CTR_LOWER, CTR_UPPER = CTR + "_lower", CTR + "_upper"
CONVERSION_LOWER, CONVERSION_UPPER = CONVERSION + "_lower", CONVERSION + "_upper"
P50, P95 = m.RESPONSE_P50.name, m.RESPONSE_P95.name
WINDOW_EVENTS, SPEND, REVENUE = m.WINDOW_EVENTS.name, m.WINDOW_SPEND.name, m.WINDOW_REVENUE.name
OLDEST, AWAITING, UNMATCHED = (
    m.OLDEST_AWAITING_AGE.name,
    m.LEADS_AWAITING.name,
    m.CONTACTS_UNMATCHED.name,
)
EVENTS, CHANNEL_EVENTS, LAG = m.EVENTS.sample, m.CHANNEL_EVENTS.sample, m.CONSUMER_LAG.name
REJECTED, LATE, DUPLICATE, FOLDED = (
    m.EVENTS_REJECTED.sample,
    m.EVENTS_LATE.sample,
    m.EVENTS_DUPLICATE.sample,
    m.EVENTS_FOLDED.sample,
)
OWNED, TRACKED, BUDGET = m.PARTITIONS_OWNED.name, m.CAMPAIGNS_TRACKED.name, m.CAMPAIGN_BUDGET.name
AUTOPAUSE_CAMPAIGNS, DECISIONS, BREAKER_OPEN = (
    m.AUTOPAUSE_CAMPAIGNS.name,
    m.DECISIONS.sample,
    m.BREAKER_OPEN.name,
)
SPLIT, PAUSER_HELD = m.CAMPAIGNS_SPLIT.name, m.PAUSER_HELD.name
TARGET, PLAN_BUDGET, PACING = m.PLAN_TARGET.name, m.PLAN_BUDGET.name, m.BUDGET_PACING.name
BASELINE = m.BASELINE.name


def _per_campaign(metric: str, selector: str) -> str:
    """One series per campaign (whichever worker exports it), without the metric's other labels."""
    return f"max by (campaign) ({metric}{{{selector}}})"


RESPONSE_BUCKET = m.RESPONSE_SECONDS.name + "_bucket"
BATCH_BUCKET = m.BATCH_SECONDS.name + "_bucket"

DS = {"type": "prometheus", "uid": DATASOURCE_UID}


@dataclass(frozen=True)
class View:
    """What the dashboards show that the worker's settings decide: the reporting currency
    (``KPI_CURRENCY``) and the exported windows (``KPI_WINDOWS``), shortest first."""

    currency: str = "USD"
    windows: tuple[str, ...] = ("5m", "15m", "1h")

    @property
    def money_unit(self) -> str:
        return f"currency{self.currency}"

    @property
    def default_window(self) -> str:
        """The middle window: long enough to be steady, short enough to show an incident."""
        return self.windows[len(self.windows) // 2]

    @classmethod
    def of(cls, settings: Settings) -> View:
        return cls(
            settings.currency, window_labels(sorted(w * 1000 for w in settings.windows_seconds))
        )


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


def _target(
    expr: str, legend: str = "", ref: str = "A", instant: bool = False, table: bool = False
) -> dict:
    target: dict[str, Any] = {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend}
    if instant:
        target["instant"] = True
        target["range"] = False
    if table:
        target["format"] = "table"
    return target


def _timeseries(
    title: str, targets: list[dict], unit: str = "short", thresholds: list | None = None
) -> dict:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    return {
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "right"},
            "tooltip": {"mode": "multi"},
        },
    }


def _stat(title: str, expr: str, *, bad_from: float, legend: str = "") -> dict:
    """A stat panel that turns red from ``bad_from`` on."""
    return {
        "type": "stat",
        "title": title,
        "datasource": DS,
        "targets": [_target(expr, legend, instant=True)],
        "fieldConfig": {
            "defaults": {
                "thresholds": {"mode": "absolute", "steps": _steps("green", "red", bad_from, False)}
            },
            "overrides": [],
        },
    }


def _steps(good: str, bad: str, threshold: float | None, below_is_bad: bool) -> list[dict]:
    if threshold is None:
        return [{"color": good, "value": None}]
    if below_is_bad:
        return [{"color": bad, "value": None}, {"color": good, "value": threshold}]
    return [{"color": good, "value": None}, {"color": bad, "value": threshold}]


def _threshold(rules: list[Rule], kpi: str) -> float | None:
    for rule in rules:
        if (
            rule.kind == "kpi"
            and rule.kpi == kpi
            and rule.target is None
            and rule.first.baseline is None
            and not rule.compound
        ):
            return rule.threshold  # a rule against each campaign's plan or normal has no one line
    return None


def _variables(multi_campaign: bool, view: View) -> list[dict]:
    campaign = {
        "name": "campaign",
        "label": "Campaign",
        "type": "query",
        "datasource": DS,
        "query": {"query": f"label_values({EVENTS}, campaign)", "refId": "campaign"},
        "definition": f"label_values({EVENTS}, campaign)",
        "refresh": 2,
        "multi": multi_campaign,
        "includeAll": multi_campaign,
        "sort": 1,
    }
    if multi_campaign:
        campaign["allValue"] = ".*"
    channel = {
        "name": "channel",
        "label": "Channel",
        "type": "query",
        "datasource": DS,
        "query": {"query": f"label_values({CHANNEL_EVENTS}, channel)", "refId": "channel"},
        "definition": f"label_values({CHANNEL_EVENTS}, channel)",
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
    }
    shown = view.default_window
    window = {
        "name": "window",
        "label": "Window",
        "type": "custom",
        # The trailing windows, then the long horizons (calendar days in each campaign's zone).
        "query": ",".join((*view.windows, *LONG_WINDOWS)),
        "current": {"text": shown, "value": shown},
        "options": [
            {"text": w, "value": w, "selected": w == shown} for w in (*view.windows, *LONG_WINDOWS)
        ],
    }
    return [campaign, channel, window]


def _dashboard(
    uid: str, title: str, layout: _Layout, multi_campaign: bool, links: list[dict], view: View
) -> dict:
    return {
        "uid": uid,
        "title": title,
        "tags": ["kpi-monitor"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": _variables(multi_campaign, view)},
        "annotations": {"list": []},
        "links": links,
        "panels": layout.panels,
    }


def ops_dashboard(rules: list[Rule], view: View | None = None) -> dict:
    view = view or View()
    money = view.money_unit
    lay = _Layout()
    sel = 'campaign=~"$campaign",window="$window"'
    lay.row("Campaigns")
    one = 'campaign=~"$campaign"'
    table_targets = [
        _target(expr, ref=column, instant=True, table=True)
        for column, expr in (
            ("CTR", f"{CTR}{{{sel}}}"),
            ("Conversion", f"{CONVERSION}{{{sel}}}"),
            ("Response p95", f"{P95}{{{sel}}}"),
            ("ROAS", f"{ROAS}{{{sel}}}"),
            ("Impressions", f'{WINDOW_EVENTS}{{event_type="impression",{sel}}}'),
            ("CPA target", _per_campaign(TARGET, f'{one},kpi="cpa"')),
            ("Spend today", _per_campaign(SPEND, f'{one},window="today"')),
            ("Daily budget", _per_campaign(PLAN_BUDGET, f'{one},period="daily"')),
            ("Pacing", _per_campaign(PACING, f'{one},period="daily"')),
            ("Firing", f'count by (campaign) (ALERTS{{alertstate="firing",{one}}})'),
        )
    ]
    overrides = []
    for column, unit, kpi, below_is_bad in (
        ("Value #CTR", "percentunit", "ctr", True),
        ("Value #Conversion", "percentunit", "conversion", True),
        ("Value #Response p95", "s", "response_p95", False),
        ("Value #ROAS", "short", "roas", True),
    ):
        overrides.append(
            {
                "matcher": {"id": "byName", "options": column},
                "properties": [
                    {"id": "unit", "value": unit},
                    {
                        "id": "thresholds",
                        "value": {
                            "mode": "absolute",
                            "steps": _steps("green", "red", _threshold(rules, kpi), below_is_bad),
                        },
                    },
                    {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                ],
            }
        )
    # Pacing: green on plan, red past the overspend rule (or 1.5), amber when under-delivering.
    overspend = next(
        (
            r.threshold
            for r in rules
            if r.kind == "kpi" and r.kpi == "budget_pacing" and r.op == ">"
        ),
        1.5,
    )
    overrides.append(
        {
            "matcher": {"id": "byName", "options": "Value #Pacing"},
            "properties": [
                {"id": "unit", "value": "percentunit"},
                {
                    "id": "thresholds",
                    "value": {
                        "mode": "absolute",
                        "steps": [
                            {"color": "orange", "value": None},
                            {"color": "green", "value": 0.5},
                            {"color": "red", "value": overspend},
                        ],
                    },
                },
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            ],
        }
    )
    overrides.append(
        {
            "matcher": {"id": "byName", "options": "Value #Firing"},
            "properties": [
                {
                    "id": "thresholds",
                    "value": {"mode": "absolute", "steps": _steps("green", "red", 1, False)},
                },
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            ],
        }
    )
    lay.add(
        {
            "type": "table",
            "title": "Campaigns ($window window)",
            "datasource": DS,
            "targets": table_targets,
            "transformations": [
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {
                            "Time": True,
                            "window": True,
                            "__name__": True,
                            "instance": True,
                            "job": True,
                        }
                    },
                },
            ],
            "fieldConfig": {"defaults": {}, "overrides": overrides},
            "options": {
                "showHeader": True,
                "sortBy": [{"displayName": "Value #CTR", "desc": False}],
            },
        },
        16,
        10,
    )
    lay.add(
        {
            "type": "alertlist",
            "title": "Firing alerts",
            "options": {
                "alertListOptions": {},
                "stateFilter": {"firing": True, "pending": True},
                "viewMode": "list",
                "showInstances": True,
                "maxItems": 50,
                "alertInstanceLabelFilter": "",
                "folder": None,
                "groupMode": "default",
                "sortOrder": 1,
            },
        },
        8,
        10,
    )
    lay.row("KPIs over time")
    over_time: tuple[tuple[str, str, str, str | None, bool], ...] = (
        ("CTR", CTR, "percentunit", "ctr", True),
        ("Conversion rate", CONVERSION, "percentunit", "conversion", True),
        ("Lead rate", LEAD_RATE, "percentunit", None, True),
        ("Lead-to-sale rate", LEAD_TO_SALE, "percentunit", None, True),
        ("Sales response p95", P95, "s", "response_p95", False),
        ("CPA", CPA, money, "cpa", False),
        ("ROAS", ROAS, "short", "roas", True),
        ("CPC", CPC, money, None, False),
    )
    for title, metric, unit, rule_kpi, below_is_bad in over_time:
        threshold = _threshold(rules, rule_kpi) if rule_kpi else None
        queries = [_target(f"{metric}{{{sel}}}", "{{campaign}}")]
        if rule_kpi in TARGETED:
            queries.append(
                _target(
                    _per_campaign(TARGET, f'campaign=~"$campaign",kpi="{rule_kpi}"'),
                    "{{campaign}} target",
                    ref="B",
                )
            )
        lay.add(
            _timeseries(
                f"{title} ($window)",
                queries,
                unit,
                _steps("green", "red", threshold, below_is_bad) if threshold is not None else None,
            ),
            12,
            8,
        )
    lay.add(
        _timeseries(
            "Oldest uncontacted lead",
            [_target(f'{OLDEST}{{campaign=~"$campaign"}}', "{{campaign}}")],
            "s",
            _steps("green", "red", _threshold(rules, "oldest_uncontacted_lead_age"), False),
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Events/s by channel (all campaigns)",
            [
                _target(
                    f'sum by (channel) (rate({CHANNEL_EVENTS}{{channel=~"$channel"}}[$__rate_interval]))',
                    "{{channel}}",
                )
            ],
            "ops",
        ),
        12,
        8,
    )
    lay.row("Auto-pause decisions")
    lay.add(
        _timeseries(
            "Campaigns by auto-pause state",
            [_target(f"sum by (state) ({AUTOPAUSE_CAMPAIGNS})", "{{state}}")],
            "short",
        ),
        8,
        7,
    )
    lay.add(
        _timeseries(
            "Decisions per hour, by verdict",
            [_target(f"sum by (verdict) (increase({DECISIONS}[1h]))", "{{verdict}}")],
            "short",
        ),
        8,
        7,
    )
    lay.add(_stat("Breakers open", f"sum({BREAKER_OPEN}) or vector(0)", bad_from=1), 4, 7)
    # What holds the pauser (kill switch, its own breaker): it acts on nothing meanwhile.
    lay.add(
        _stat(
            "Pauser held, by reason",
            f"max by (reason) ({PAUSER_HELD}) > 0 or vector(0)",
            bad_from=1,
            legend="{{reason}}",
        ),
        4,
        7,
    )
    lay.row("Pipeline")
    lay.add(
        _timeseries(
            "Events/s by type",
            [_target(f"sum by (event_type) (rate({EVENTS}[$__rate_interval]))", "{{event_type}}")],
            "ops",
        ),
        8,
        8,
    )
    lay.add(
        _timeseries(
            "Consumer lag",
            [_target(f"sum by (instance, topic) ({LAG})", "{{instance}} {{topic}}")],
            "short",
        ),
        8,
        8,
    )
    lay.add(
        _timeseries(
            "Rejected / late / duplicate per second",
            [
                _target(
                    f"sum by (reason) (rate({REJECTED}[$__rate_interval]))", "rejected {{reason}}"
                ),
                _target(f"sum(rate({LATE}[$__rate_interval]))", "late", ref="B"),
                _target(f"sum(rate({DUPLICATE}[$__rate_interval]))", "duplicate", ref="C"),
                _target(
                    f'sum(rate({FOLDED}{{budget="campaign"}}[$__rate_interval]))',
                    "folded into __other__",
                    ref="D",
                ),
            ],
            "ops",
        ),
        8,
        8,
    )
    lay.add(
        {
            "type": "stat",
            "title": "Workers up",
            "datasource": DS,
            "targets": [_target('sum(up{job="kpi-monitor"})', instant=True)],
            "fieldConfig": {
                "defaults": {
                    "thresholds": {"mode": "absolute", "steps": _steps("green", "red", 1, True)}
                },
                "overrides": [],
            },
        },
        6,
        5,
    )
    lay.add(
        {
            "type": "stat",
            "title": "Partitions owned",
            "datasource": DS,
            "targets": [_target(f"sum({OWNED})", instant=True)],
            "fieldConfig": {"defaults": {}, "overrides": []},
        },
        6,
        5,
    )
    lay.add(
        {
            "type": "stat",
            "title": "Campaign budget used",
            "datasource": DS,
            "targets": [_target(f"sum({TRACKED}) / sum({BUDGET})", instant=True)],
            "fieldConfig": {
                "defaults": {
                    "unit": "percentunit",
                    "thresholds": {"mode": "absolute", "steps": _steps("green", "red", 0.9, False)},
                },
                "overrides": [],
            },
        },
        6,
        5,
    )
    lay.add(
        _stat(
            "Campaigns split over partitions",
            f"sum({SPLIT}) or vector(0)",
            bad_from=1,
        ),
        6,
        5,
    )
    lay.add(
        _timeseries(
            "Sales response p95, all campaigns (1h)",
            [
                _target(
                    f"histogram_quantile(0.95, sum by (le) (rate({RESPONSE_BUCKET}[1h])))", "p95"
                )
            ],
            "s",
        ),
        6,
        5,
    )
    lay.add(
        _timeseries(
            "Batch time p95",
            [
                _target(
                    f"histogram_quantile(0.95, sum by (le, instance) (rate({BATCH_BUCKET}[$__rate_interval])))",
                    "{{instance}}",
                )
            ],
            "s",
        ),
        6,
        5,
    )
    links = [
        {
            "title": "Campaign drill-down",
            "type": "link",
            "url": "/d/kpi-campaign/kpi-campaign?${campaign:queryparam}",
        }
    ]
    return _dashboard("kpi-ops", "kpi-monitor: live ops", lay, True, links, view)


def campaign_dashboard(rules: list[Rule], view: View | None = None) -> dict:
    view = view or View()
    money = view.money_unit
    lay = _Layout()
    sel = 'campaign="$campaign",window="$window"'
    lay.row("Now")
    for title, expr, unit in (
        ("CTR", f"{CTR}{{{sel}}}", "percentunit"),
        ("Conversion", f"{CONVERSION}{{{sel}}}", "percentunit"),
        ("Response p95", f"{P95}{{{sel}}}", "s"),
        ("ROAS", f"{ROAS}{{{sel}}}", "short"),
        ("Spend", f"{SPEND}{{{sel}}}", money),
        ("Revenue", f"{REVENUE}{{{sel}}}", money),
    ):
        lay.add(
            {
                "type": "stat",
                "title": f"{title} ($window)",
                "datasource": DS,
                "targets": [_target(expr, instant=True)],
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            },
            4,
            4,
        )
    lay.row("Over time")
    plan = 'campaign="$campaign"'
    lay.add(
        _timeseries(
            "Pacing: spend today against the daily budget",
            [
                _target(f'{SPEND}{{{plan},window="today"}}', "spend today"),
                _target(f'{PLAN_BUDGET}{{{plan},period="daily"}}', "daily budget", ref="B"),
                _target(f'{PACING}{{{plan},period="daily"}}', "pacing", ref="C"),
            ],
            money,
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "CTR with 95% bounds",
            [
                _target(f"{CTR}{{{sel}}}", "CTR"),
                _target(f"{CTR_LOWER}{{{sel}}}", "lower", ref="B"),
                _target(f"{CTR_UPPER}{{{sel}}}", "upper", ref="C"),
                _target(f'{TARGET}{{{plan},kpi="ctr"}}', "target", ref="D"),
                # Its own normal, where a rule reads one (kpi_baseline; none before it has one).
                _target(f'{BASELINE}{{{plan},kpi="ctr"}}', "normal ({{baseline}})", ref="E"),
            ],
            "percentunit",
            _steps("green", "red", _threshold(rules, "ctr"), True),
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Conversion with 95% bounds",
            [
                _target(f"{CONVERSION}{{{sel}}}", "conversion"),
                _target(f"{CONVERSION_LOWER}{{{sel}}}", "lower", ref="B"),
                _target(f"{CONVERSION_UPPER}{{{sel}}}", "upper", ref="C"),
                _target(f'{TARGET}{{{plan},kpi="conversion"}}', "target", ref="D"),
            ],
            "percentunit",
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Events/s by type",
            [
                _target(
                    f'sum by (event_type) (rate({EVENTS}{{campaign="$campaign"}}[$__rate_interval]))',
                    "{{event_type}}",
                )
            ],
            "ops",
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Sales response time",
            [_target(f"{P50}{{{sel}}}", "p50"), _target(f"{P95}{{{sel}}}", "p95", ref="B")],
            "s",
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Leads awaiting first contact",
            [
                _target(f'{AWAITING}{{campaign="$campaign"}}', "waiting"),
                _target(f'{OLDEST}{{campaign="$campaign"}}', "oldest age (s)", ref="B"),
                _target(f'{UNMATCHED}{{campaign="$campaign"}}', "contacts without lead", ref="C"),
            ],
        ),
        12,
        8,
    )
    lay.add(
        _timeseries(
            "Spend, revenue, CPA",
            [
                _target(f"{SPEND}{{{sel}}}", "spend"),
                _target(f"{REVENUE}{{{sel}}}", "revenue", ref="B"),
                _target(f"{CPA}{{{sel}}}", "CPA", ref="C"),
                _target(f'{TARGET}{{{plan},kpi="cpa"}}', "CPA target", ref="D"),
            ],
            money,
        ),
        12,
        8,
    )
    lay.add(
        {
            "type": "table",
            "title": "Alerts for this campaign",
            "datasource": DS,
            "targets": [_target('ALERTS{campaign="$campaign"}', instant=True, table=True)],
            "fieldConfig": {"defaults": {}, "overrides": []},
        },
        12,
        8,
    )
    links = [{"title": "Back to ops", "type": "link", "url": "/d/kpi-ops/kpi-ops"}]
    return _dashboard("kpi-campaign", "kpi-monitor: campaign", lay, False, links, view)
