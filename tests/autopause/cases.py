"""One table of (rule, figures, holds) cases, run through the worker's evaluation and through
promtool on the generated Prometheus rule: the two must agree case by case."""

from __future__ import annotations

from autopause.evaluate import Figures, WindowFigures
from rulebook.rules import Rule, parse_rules


def rule(**fields) -> Rule:
    base = {"name": "case", "summary": "s", "severity": "page", "may_pause": True}
    return parse_rules({"rules": [{**base, **fields}]})[0]


def win(
    impressions=0,
    clicks=0,
    leads=0,
    sales=0,
    contacts=0,
    revenue=0.0,
    spend=0.0,
    p50_ms=None,
    p95_ms=None,
) -> WindowFigures:
    return WindowFigures(
        (impressions, clicks, leads, sales, contacts),
        round(revenue * 1e6),
        round(spend * 1e6),
        p50_ms,
        p95_ms,
    )


CTR = {
    "kpi": "ctr",
    "window": "15m",
    "op": "<",
    "threshold": 0.005,
    "confident": True,
    "min_volume": {"event_type": "impression", "count": 2000},
}
CTR_PLAIN = {"kpi": "ctr", "window": "15m", "op": "<", "threshold": 0.005}
CONVERSION = {
    "kpi": "conversion",
    "window": "1h",
    "op": "<",
    "threshold": 0.01,
    "confident": True,
    "min_volume": {"event_type": "click", "count": 300},
}
CPA = {
    "kpi": "cpa",
    "window": "1h",
    "op": ">",
    "threshold": 50,
    "min_volume": {"event_type": "sale", "count": 10},
}
ROAS = {
    "kpi": "roas",
    "window": "1h",
    "op": "<",
    "threshold": 1.0,
    "min_volume": {"event_type": "click", "count": 300},
}
P95 = {
    "kpi": "response_p95",
    "window": "1h",
    "op": ">",
    "threshold": 3600,
    "min_volume": {"event_type": "sales_contact", "count": 20},
}
OLDEST = {"kpi": "oldest_uncontacted_lead_age", "op": ">", "threshold": 1800}
AWAITING_FEW = {"kpi": "leads_awaiting_contact", "op": "<", "threshold": 5}
SILENCE = {
    "kpi": "impressions",
    "window": "15m",
    "op": "<",
    "threshold": 1,
    "min_volume": {"event_type": "impression", "count": 500, "window": "1h"},
}
L2S = {"kpi": "lead_to_sale", "window": "1h", "op": ">", "threshold": 0.5, "confident": True}

# (name, rule fields, figures, holds)
CASES = [
    ("ctr collapsed, sure, enough volume", CTR, Figures({"15m": win(3000, 6)}), True),
    ("ctr low but inside the Wilson bound", CTR, Figures({"15m": win(2500, 10)}), False),
    ("ctr low on too few impressions", CTR, Figures({"15m": win(1999, 2)}), False),
    ("ctr with no impressions has no value", CTR_PLAIN, Figures({"15m": win(0, 0)}), False),
    ("ctr exactly at the threshold", CTR_PLAIN, Figures({"15m": win(2000, 10)}), False),
    ("ctr just under the threshold", CTR_PLAIN, Figures({"15m": win(2000, 9)}), True),
    ("ctr in another window only", CTR_PLAIN, Figures({"5m": win(2000, 1)}), False),
    ("conversion collapsed", CONVERSION, Figures({"1h": win(clicks=2000, sales=5)}), True),
    ("conversion healthy", CONVERSION, Figures({"1h": win(clicks=5000, sales=100)}), False),
    ("cpa over target", CPA, Figures({"1h": win(sales=10, spend=600.0)}), True),
    ("cpa under the sale volume", CPA, Figures({"1h": win(sales=9, spend=600.0)}), False),
    (
        "cpa with no sale has no value",
        dict(CPA, min_volume=None),
        Figures({"1h": win(spend=9.0)}),
        False,
    ),
    ("roas under target", ROAS, Figures({"1h": win(clicks=300, revenue=80.0, spend=100.0)}), True),
    ("roas at target", ROAS, Figures({"1h": win(clicks=300, revenue=100.0, spend=100.0)}), False),
    ("response p95 over the SLA", P95, Figures({"1h": win(contacts=20, p95_ms=4_000_000.0)}), True),
    ("no response in the window", P95, Figures({"1h": win(contacts=20)}), False),
    ("oldest lead waiting too long", OLDEST, Figures({}, 3, 2000.5), True),
    ("no lead waiting", OLDEST, Figures({}, 0, None), False),
    ("few leads awaiting", AWAITING_FEW, Figures({}, 3), True),
    ("no lead awaiting is no series", AWAITING_FEW, Figures({}, 0), False),
    ("silent after traffic", SILENCE, Figures({"15m": win(0), "1h": win(600)}), True),
    ("silent without traffic before", SILENCE, Figures({"15m": win(0), "1h": win(499)}), False),
    (
        "campaign not selected",
        dict(CTR_PLAIN, campaigns="brand-.*"),
        Figures({"15m": win(2000, 1)}),
        False,
    ),
    ("campaign selected", dict(CTR_PLAIN, campaigns="c.*"), Figures({"15m": win(2000, 1)}), True),
    ("lead-to-sale surely high", L2S, Figures({"1h": win(leads=100, sales=80)}), True),
    ("lead-to-sale high but unsure", L2S, Figures({"1h": win(leads=4, sales=3)}), False),
    (
        "revenue over",
        {"kpi": "revenue", "window": "1h", "op": ">", "threshold": 1000},
        Figures({"1h": win(revenue=1000.5)}),
        True,
    ),
    (
        "spend under",
        {"kpi": "spend", "window": "5m", "op": "<", "threshold": 0.5},
        Figures({"5m": win(spend=0.25)}),
        True,
    ),
    (
        "aov over",
        {"kpi": "aov", "window": "1h", "op": ">", "threshold": 100},
        Figures({"1h": win(sales=12, revenue=1234.56)}),
        True,
    ),
]
