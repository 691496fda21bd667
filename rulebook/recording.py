"""Prometheus recording rules for the derived KPIs, from the catalogue in ``stream.kpis``.

Workers export additive window sums per campaign (``kpi_window_events`` by event type,
``kpi_window_revenue``, ``kpi_window_spend``); every ratio and, for rate KPIs, its 95% Wilson
score bounds are derived here in PromQL, once per evaluation, instead of being rendered by every
worker on every scrape. Names follow ``level:metric``: ``campaign:kpi_ctr_ratio``,
``campaign:kpi_ctr_ratio_lower``, ... with the labels of the sums (campaign, window, and the
scrape's instance and job). A zero denominator gives no series, as on the worker.
"""

from __future__ import annotations

from stream import catalogue as m
from stream.kpis import RATIO_BY_KEY, RATIOS, REVENUE, SPEND, Ratio
from stream.wilson import Z_95

LEVEL = "campaign:"
_Z2 = Z_95 * Z_95


def recorded(metric: str) -> str:
    return LEVEL + metric


def _sum(source: str) -> str:
    if source == REVENUE:
        return m.WINDOW_REVENUE.name
    if source == SPEND:
        return m.WINDOW_SPEND.name
    return f'sum without (event_type) ({m.WINDOW_EVENTS.name}{{event_type="{source}"}})'


def ratio_expr(ratio: Ratio) -> str:
    return f"{_sum(ratio.numerator)} / ({_sum(ratio.denominator)} > 0)"


def wilson_expr(ratio: Ratio, side: str) -> str:
    """The Wilson score bound of ``stream.wilson.wilson_bounds``, written in PromQL."""
    s, n = _sum(ratio.numerator), _sum(ratio.denominator)
    p = f"clamp_max({s} / ({n} > 0), 1)"
    sign = "-" if side == "lower" else "+"
    bound = (
        f"({p} + {_Z2 / 2!r} / {n} {sign} {Z_95!r} * sqrt({p} * (1 - {p}) / {n} "
        f"+ {_Z2 / 4!r} / ({n} * {n}))) / (1 + {_Z2!r} / {n})"
    )
    # At p = 0 and p = 1 the interval touches 0 and 1 exactly, as in wilson_bounds.
    if side == "lower":
        return f"clamp_min({bound}, 0) * clamp_max({s}, 1)"
    return f"clamp_max({bound} + floor({p}), 1)"


def recording_rules() -> list[dict]:
    rules = []
    for ratio in RATIOS:
        rules.append({"record": recorded(ratio.metric), "expr": ratio_expr(ratio)})
        if ratio.rate:
            for side in ("lower", "upper"):
                rules.append(
                    {"record": recorded(f"{ratio.metric}_{side}"), "expr": wilson_expr(ratio, side)}
                )
    return rules


def recorded_ratio(key: str) -> str:
    return recorded(RATIO_BY_KEY[key].metric)
