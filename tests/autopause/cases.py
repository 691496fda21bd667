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
STOP_LOSS = {
    "all": [
        {"kpi": "spend", "window": "today", "op": ">", "threshold": {"target": "cpa", "factor": 2}},
        {"kpi": "sales", "window": "today", "op": "<", "threshold": 1},
    ]
}
CPA_OR_ROAS = {"any": [CPA, ROAS]}
AWAITING_FEW = {"kpi": "leads_awaiting_contact", "op": "<", "threshold": 5}
SILENCE = {
    "kpi": "impressions",
    "window": "15m",
    "op": "<",
    "threshold": 1,
    "min_volume": {"event_type": "impression", "count": 500, "window": "1h"},
}
L2S = {"kpi": "lead_to_sale", "window": "1h", "op": ">", "threshold": 0.5, "confident": True}

CPA_PLAN = {
    "kpi": "cpa",
    "window": "7d",
    "op": ">",
    "threshold": {"target": "cpa", "factor": 1.2},
    "min_volume": {"event_type": "sale", "count": 5},
}
CTR_PLAN = {
    "kpi": "ctr",
    "window": "today",
    "op": "<",
    "threshold": {"target": "ctr", "factor": 0.5},
    "confident": True,
    "min_volume": {"event_type": "impression", "count": 2000},
}
PACING = {"kpi": "budget_pacing", "op": ">", "threshold": 1.5, "after": "3h"}
OUTSIDE = {"kpi": "spend_outside_flight", "op": ">", "threshold": 0}


def planned(windows: dict, targets=None, budget=None, day_elapsed_s=None) -> Figures:
    return Figures(windows, 0, None, targets or {}, budget or {}, day_elapsed_s)


# Against the campaign's own normal (kpi_baseline): half its usual CTR for this hour of the week.
NORMAL_CTR = {
    "kpi": "ctr",
    "window": "1h",
    "op": "<",
    "threshold": {"baseline": {"same_hour_of_week": "4w"}, "factor": 0.5},
    "confident": True,
    "min_volume": {"event_type": "impression", "count": 1000},
}
NORMAL_KEY = ("ctr", "1h", "same_hour_of_week_4w")
NORMAL_SPEND = {
    "kpi": "spend",
    "window": "1h",
    "op": ">",
    "threshold": {"baseline": {"trailing": "7d"}, "factor": 3},
}
SPEND_KEY = ("spend", "1h", "trailing_7d")


def normal(windows: dict, baselines: dict) -> Figures:
    return Figures(windows, baselines=baselines)


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
    # Against each campaign's own plan, over the long horizons.
    (
        "7d cpa over 120% of its target",
        CPA_PLAN,
        planned({"7d": win(sales=5, spend=250.5)}, {"cpa": 41.7}),
        True,
    ),
    (
        "7d cpa just within 120% of its target",
        CPA_PLAN,
        planned({"7d": win(sales=5, spend=250.0)}, {"cpa": 41.7}),
        False,
    ),
    (
        "the same cpa against a higher target",
        CPA_PLAN,
        planned({"7d": win(sales=5, spend=250.5)}, {"cpa": 60}),
        False,
    ),
    ("no cpa target: not judged", CPA_PLAN, planned({"7d": win(sales=5, spend=900.0)}), False),
    (
        "7d cpa on too few sales",
        CPA_PLAN,
        planned({"7d": win(sales=4, spend=900.0)}, {"cpa": 10}),
        False,
    ),
    (
        "ctr today under half its target, sure",
        CTR_PLAN,
        planned({"today": win(4000, 20)}, {"ctr": 0.02}),
        True,
    ),
    (
        "display ctr normal for display",
        CTR_PLAN,
        planned({"today": win(4000, 12)}, {"ctr": 0.004}),
        False,
    ),
    (
        "30d roas under target",
        dict(ROAS, window="30d", threshold={"target": "roas", "factor": 1}),
        planned({"30d": win(clicks=300, revenue=290.0, spend=100.0)}, {"roas": 3}),
        True,
    ),
    (
        "overspend pacing after 3 hours",
        PACING,
        planned({}, {}, {"budget_pacing": 1.8}, 4 * 3600.0),
        True,
    ),
    (
        "overspend pacing in the first hours",
        PACING,
        planned({}, {}, {"budget_pacing": 4.0}, 1800.0),
        False,
    ),
    ("no budget: no pacing", PACING, planned({}, {}, {}, 5 * 3600.0), False),
    (
        "under-delivery",
        {"kpi": "budget_pacing", "op": "<", "threshold": 0.5, "after": "6h"},
        planned({}, {}, {"budget_pacing": 0.3}, 7 * 3600.0),
        True,
    ),
    (
        "spend outside the flight",
        OUTSIDE,
        planned({}, {}, {"spend_outside_flight": 12.5}, 0.0),
        True,
    ),
    ("inside the flight", OUTSIDE, planned({}, {}, {}, 0.0), False),
    (
        "flight pacing over",
        {"kpi": "flight_pacing", "op": ">", "threshold": 1.2},
        planned({}, {}, {"flight_pacing": 1.25}),
        True,
    ),
    (
        "aov over",
        {"kpi": "aov", "window": "1h", "op": ">", "threshold": 100},
        Figures({"1h": win(sales=12, revenue=1234.56)}),
        True,
    ),
    # Against the campaign's own normal: a display campaign at 0.4% that halves is caught, one at
    # its usual 0.3% is not, and one with no baseline yet (cold start) is not judged.
    (
        "ctr under half its normal, sure",
        NORMAL_CTR,
        normal({"1h": win(20000, 20)}, {NORMAL_KEY: 0.004}),
        True,
    ),
    (
        "ctr at its normal",
        NORMAL_CTR,
        normal({"1h": win(20000, 60)}, {NORMAL_KEY: 0.003}),
        False,
    ),
    (
        "ctr under half its normal but inside the Wilson bound",
        NORMAL_CTR,
        normal({"1h": win(1500, 2)}, {NORMAL_KEY: 0.004}),
        False,
    ),
    (
        "ctr collapsed, no baseline yet",
        NORMAL_CTR,
        normal({"1h": win(20000, 1)}, {}),
        False,
    ),
    (
        "spend over three times its trailing normal",
        NORMAL_SPEND,
        normal({"1h": win(clicks=10, spend=31.0)}, {SPEND_KEY: 10.0}),
        True,
    ),
    (
        "spend three times its normal exactly",
        NORMAL_SPEND,
        normal({"1h": win(clicks=10, spend=30.0)}, {SPEND_KEY: 10.0}),
        False,
    ),
    (
        "all: ctr under its normal and cpa over target",
        {"all": [dict(NORMAL_CTR), dict(CPA_PLAN, window="1h", min_volume=None)]},
        Figures(
            {"1h": win(20000, 20, sales=2, spend=200.0)},
            targets={"cpa": 50},
            baselines={NORMAL_KEY: 0.004},
        ),
        True,
    ),
    # Compound conditions: all of them (PromQL ``and``), any of them (``or``), matched per campaign.
    (
        "stop-loss: spent twice the target cpa today, no sale",
        STOP_LOSS,
        planned({"today": win(clicks=40, spend=90.0)}, {"cpa": 40}),
        True,
    ),
    (
        "stop-loss: a sale came",
        STOP_LOSS,
        planned({"today": win(clicks=40, sales=1, spend=90.0)}, {"cpa": 40}),
        False,
    ),
    (
        "stop-loss: under twice the target",
        STOP_LOSS,
        planned({"today": win(clicks=40, spend=70.0)}, {"cpa": 40}),
        False,
    ),
    (
        "stop-loss: no target cpa",
        STOP_LOSS,
        planned({"today": win(clicks=40, spend=900.0)}, {}),
        False,
    ),
    (
        "any: roas alone under",
        CPA_OR_ROAS,
        Figures({"1h": win(clicks=300, sales=5, revenue=50.0, spend=100.0)}),
        True,
    ),
    (
        "any: cpa alone over",
        CPA_OR_ROAS,
        Figures({"1h": win(clicks=100, sales=10, revenue=2000.0, spend=600.0)}),
        True,
    ),
    (
        "any: neither",
        CPA_OR_ROAS,
        Figures({"1h": win(clicks=300, sales=10, revenue=2000.0, spend=400.0)}),
        False,
    ),
    (
        "any: a condition without a target cannot hold, the other can",
        {"any": [dict(STOP_LOSS["all"][0]), dict(ROAS)]},
        Figures({"1h": win(clicks=300, revenue=50.0, spend=100.0)}),
        True,
    ),
]
