"""A KPI rule evaluated on one campaign's exact figures, with the semantics of the Prometheus
rule that ``rulebook`` generates from it.

The generated expression is ``KPI{window} op threshold`` (for a ``confident`` rule, the Wilson
bound on the far side: ``_upper`` for ``<``, ``_lower`` for ``>``; for a rule against the plan,
``op on(campaign) factor * kpi_plan_target{kpi}``; against its own normal, ``factor *
kpi_baseline{kpi, window, baseline}``), joined with
``kpi_window_events{event_type, window} >= count`` for ``min_volume`` and with
``kpi_day_elapsed_seconds >= after`` for ``after``. A KPI with no value (a
zero denominator, no response in the window, nothing awaiting) has no series, so the rule does not
hold, whatever the operator. ``tests/autopause/test_evaluate.py`` runs one table of cases through
this function and through promtool on the generated rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple

from rulebook.rules import KPIS, Condition, Rule
from stream.durations import parse_duration
from stream.events import EVENT_TYPES, MICROS
from stream.kpis import RATIO_BY_KEY, ratio, source_value
from stream.wilson import wilson_bounds

_KIND = {name: kind for kind, name in enumerate(EVENT_TYPES)}


class WindowFigures(NamedTuple):
    counts: tuple[int, ...]  # by event kind (stream.events.EVENT_TYPES)
    revenue_micros: int = 0
    spend_micros: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None


_NONE: Mapping[str, float] = MappingProxyType({})


class Figures(NamedTuple):
    """What the worker exports for one campaign, exactly."""

    windows: Mapping[str, WindowFigures]  # by window label ("15m", or a horizon: "7d")
    awaiting: int = 0  # leads with no sales contact yet
    oldest_awaiting_age_s: float | None = None
    targets: Mapping[str, float] = _NONE  # the effective plan's targets (kpi_plan_target)
    budget: Mapping[str, float] = _NONE  # budget figures by KPI name (budget_pacing, ...)
    day_elapsed_s: float | None = None  # with a plan: since the campaign's midnight
    # Its own normals (kpi_baseline) by (kpi, window, baseline label); None: none yet.
    baselines: Mapping[tuple[str, str, str], float | None] = MappingProxyType({})


class Evaluation(NamedTuple):
    holds: bool  # the rule's condition holds: the Prometheus expression returns a series
    value: float | None  # the KPI
    bound: float | None  # the Wilson bound compared, for a confident rule
    volume: int | None  # events of min_volume's type in its window, if the rule has one
    bounds: tuple[float, float] | None = None  # 95% Wilson (lower, upper), for a rate KPI
    threshold: float | None = None  # compared with: the rule's, or its factor x the target
    parts: tuple[Evaluation, ...] = ()  # a compound rule's: each condition's, in order


NO_EVIDENCE = Evaluation(False, None, None, None)  # a decision the clock made, not a figure


def kpi_value(kpi: str, window: WindowFigures | None, figures: Figures) -> float | None:
    """The KPI as the worker exports it (or Prometheus records it); None where no series is."""
    if kpi == "oldest_uncontacted_lead_age":
        return figures.oldest_awaiting_age_s
    if kpi == "leads_awaiting_contact":
        return figures.awaiting or None  # exported only while some lead waits
    if not KPIS[kpi].windowed:
        return figures.budget.get(kpi)  # budget figures: exported for campaigns with a budget
    if window is None:
        return None
    if kpi in RATIO_BY_KEY:
        r = RATIO_BY_KEY[kpi]
        args = (window.counts, window.revenue_micros, window.spend_micros)
        return ratio(source_value(r.numerator, *args), source_value(r.denominator, *args))
    if kpi == "revenue":
        return window.revenue_micros / MICROS
    if kpi == "spend":
        return window.spend_micros / MICROS
    if kpi in ("response_p50", "response_p95"):
        ms = window.p50_ms if kpi == "response_p50" else window.p95_ms
        return None if ms is None else ms / 1000
    event_type = KPIS[kpi].event_type
    assert event_type is not None  # the remaining KPIs are event counts
    return window.counts[_KIND[event_type]]


def _beyond(value: float, op: str, threshold: float) -> bool:
    return value < threshold if op == "<" else value > threshold


@lru_cache(maxsize=256)
def _pattern(campaigns: str) -> re.Pattern[str]:
    return re.compile(campaigns)


def selects(rule: Rule, campaign: str) -> bool:
    """PromQL's ``campaign=~"..."`` is anchored at both ends."""
    return rule.campaigns is None or _pattern(rule.campaigns).fullmatch(campaign) is not None


def evaluate(
    rule: Rule, figures: Figures, *, op: str | None = None, threshold: float | None = None
) -> Evaluation:
    """``rule`` on ``figures``. ``op`` and ``threshold`` replace the rule's own, for the resume
    condition of a paused campaign (the opposite side of ``resume_threshold``; single-condition
    rules only). A compound rule holds when all (``combine: all``) or any of its conditions do;
    its evaluation is its first condition's, with every condition's in ``parts``."""
    assert rule.kind == "kpi" and rule.conditions
    if not rule.compound:
        return evaluate_condition(rule.first, figures, op=op, threshold=threshold)
    parts = tuple(evaluate_condition(c, figures) for c in rule.conditions)
    held = [p.holds for p in parts]
    holds = all(held) if rule.combine == "all" else any(held)
    return parts[0]._replace(holds=holds, parts=parts)


def evaluate_condition(
    condition: Condition,
    figures: Figures,
    *,
    op: str | None = None,
    threshold: float | None = None,
) -> Evaluation:
    op = op or condition.op
    threshold = condition.threshold if threshold is None else threshold
    if condition.target is not None:
        target = figures.targets.get(condition.target)
        if target is None:  # no kpi_plan_target series: the comparison has nothing to hold on
            return Evaluation(False, None, None, None)
        threshold = threshold * target  # as PromQL's ``factor * kpi_plan_target``
    ref = condition.baseline_ref
    if ref is not None:
        normal = figures.baselines.get(ref.key)
        if normal is None:  # cold start: no kpi_baseline series to compare with
            return Evaluation(False, None, None, None)
        threshold = threshold * normal  # as PromQL's ``factor * kpi_baseline``
    window = figures.windows.get(condition.window) if condition.window else None
    value = kpi_value(condition.kpi, window, figures)
    bound = bounds = None
    ratio_def = RATIO_BY_KEY.get(condition.kpi)
    if ratio_def is not None and ratio_def.rate and window is not None:
        bounds = wilson_bounds(
            window.counts[_KIND[ratio_def.numerator]], window.counts[_KIND[ratio_def.denominator]]
        )
    if condition.confident and bounds is not None:
        bound = bounds[1] if op == "<" else bounds[0]
    compared = bound if condition.confident else value
    holds = compared is not None and _beyond(compared, op, threshold)
    volume = None
    if condition.min_volume is not None:
        volume_window = figures.windows.get(condition.min_volume.window)
        volume = (
            volume_window.counts[_KIND[condition.min_volume.event_type]] if volume_window else 0
        )
        holds = holds and volume >= condition.min_volume.count
    if condition.after != "0s":
        elapsed = figures.day_elapsed_s
        holds = holds and elapsed is not None and elapsed >= parse_duration(condition.after)
    return Evaluation(holds, value, bound, volume, bounds, threshold)
