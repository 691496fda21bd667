"""KPI alert rules: one documented YAML file, compiled to PromQL for Prometheus and Grafana.

Pure: takes parsed YAML (plain dicts), returns rule objects and PromQL strings. Errors name the
rule and the field, so a typo in the rules file fails the generator, not the pager.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from stream import catalogue as m
from stream.baselines import (
    BASELINE_KPIS,
    Baseline,
    BaselineError,
    BaselineRef,
    check_window,
    parse_baseline,
)
from stream.durations import format_duration, parse_duration
from stream.events import EVENT_TYPES
from stream.exposition import HORIZON_EVENT_TYPES
from stream.horizons import HORIZONS
from stream.kpis import RATIOS
from stream.plans import TARGETS as PLAN_TARGETS

from .recording import recorded


class RuleError(ValueError):
    """The rules file is wrong; the message names the rule and field."""


@dataclass(frozen=True)
class KpiSource:
    metric: str
    windowed: bool = True
    rate: bool = False  # has 95% Wilson bounds (metric_lower / metric_upper)
    event_type: str | None = None  # for kpi_window_events
    period: str | None = None  # for the budget figures: daily or flight
    horizons: bool = True  # has figures over the long horizons (today, 7d, 30d, flight)


# Ratios are read from the recording rules (rulebook.recording), which derive them from the sums
# the workers export; the rest are exported by the workers as they are.
KPIS: dict[str, KpiSource] = {
    **{r.key: KpiSource(recorded(r.metric), rate=r.rate) for r in RATIOS},
    "revenue": KpiSource(m.WINDOW_REVENUE.name),
    "spend": KpiSource(m.WINDOW_SPEND.name),
    "response_p50": KpiSource(m.RESPONSE_P50.name, horizons=False),
    "response_p95": KpiSource(m.RESPONSE_P95.name, horizons=False),
    # Against the plan's budgets (stream.pacing); a campaign without the budget has no series.
    "budget_used": KpiSource(m.BUDGET_USED.name, windowed=False, period="daily"),
    "budget_pacing": KpiSource(m.BUDGET_PACING.name, windowed=False, period="daily"),
    "flight_budget_used": KpiSource(m.BUDGET_USED.name, windowed=False, period="flight"),
    "flight_pacing": KpiSource(m.BUDGET_PACING.name, windowed=False, period="flight"),
    "spend_outside_flight": KpiSource(m.SPEND_OUTSIDE_FLIGHT.name, windowed=False),
    "oldest_uncontacted_lead_age": KpiSource(m.OLDEST_AWAITING_AGE.name, windowed=False),
    "leads_awaiting_contact": KpiSource(m.LEADS_AWAITING.name, windowed=False),
    **{f"{t}s": KpiSource(m.WINDOW_EVENTS.name, event_type=t) for t in EVENT_TYPES},
}
# KPIs in the reporting currency: a money target of the plan may bound any of them.
MONEY_KPIS = frozenset({"revenue", "spend", *(r.key for r in RATIOS if r.currency)})
SEVERITIES = ("page", "ticket", "info")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class MinVolume:
    event_type: str
    count: int
    window: str


@dataclass(frozen=True)
class Condition:
    """One comparison of a KPI rule: the KPI over a window against a threshold (fixed, or a
    factor of the campaign's plan target), with its volume guard and time of day."""

    kpi: str
    window: str | None
    op: str
    threshold: float
    confident: bool = False
    min_volume: MinVolume | None = None
    # Against each campaign's own plan: ``threshold`` is a factor of the plan's target of this
    # name; a campaign without that target does not meet the condition.
    target: str | None = None
    after: str = "0s"  # only once this much of the campaign's day has passed (its time zone)
    # Against the campaign's own normal: ``threshold`` is a factor of this baseline of the KPI
    # over the same window (``kpi_baseline``); a campaign with none yet does not meet it.
    baseline: Baseline | None = None

    @cached_property  # read per campaign per round
    def baseline_ref(self) -> BaselineRef | None:
        if self.baseline is None or self.window is None:
            return None
        return BaselineRef(
            self.kpi, self.window, int(parse_duration(self.window) * 1000), self.baseline
        )

    def promql(self, campaigns: str | None, settle: str = "0s") -> str:
        source = KPIS[self.kpi]
        metric = source.metric
        if self.confident:
            # "Collapsed" must hold for the whole 95% interval: below means its upper bound is.
            metric += "_upper" if self.op == "<" else "_lower"
        offset = f" offset {settle}" if settle != "0s" else ""
        selector = _selector(
            self.window if source.windowed else None, campaigns, source.event_type, source.period
        )
        ref = self.baseline_ref
        if ref is not None:
            kpi, window, label = ref.key
            # The campaign's own normal (max: one value even if two workers export it).
            normal = (
                f"max by (campaign) ({m.BASELINE.name}"
                f'{{kpi="{kpi}",window="{window}",baseline="{label}"}})'
            )
            expr = (
                f"{metric}{selector}{offset} {self.op} on (campaign) group_left () "
                f"({_number(self.threshold)} * {normal})"
            )
        elif self.target is None:
            expr = f"{metric}{selector}{offset} {self.op} {_number(self.threshold)}"
        else:
            # The campaign's own target (max: one value even if two workers export it).
            target = f'max by (campaign) ({m.PLAN_TARGET.name}{{kpi="{self.target}"}})'
            expr = (
                f"{metric}{selector}{offset} {self.op} on (campaign) group_left () "
                f"({_number(self.threshold)} * {target})"
            )
        if self.after != "0s":
            expr = (
                f"({expr}) and on (campaign) "
                f"({m.DAY_ELAPSED.name} >= {_number(parse_duration(self.after))})"
            )
        if self.min_volume is not None:
            volume = self.min_volume
            volume_selector = _selector(volume.window, campaigns, volume.event_type) + offset
            expr = (
                f"({expr}) and on (campaign) "
                f"({m.WINDOW_EVENTS.name}{volume_selector} >= {volume.count})"
            )
        return expr

    @property
    def windows(self) -> tuple[str, ...]:
        """The windows it reads (its own and its volume guard's)."""
        return tuple(w for w in (self.window, self.min_volume and self.min_volume.window) if w)


COMBINE = ("all", "any")
ACTIONS = ("pause", "notify")
PAUSE_FOR = ("rest_of_day",)


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str
    severity: str
    for_: str
    kind: str  # "kpi" or "pipeline"
    # A KPI rule's conditions, all of which (``combine: all``) or any of which must hold; the
    # first one names the rule's KPI (its ``kpi`` label, its evidence's value).
    conditions: tuple[Condition, ...] = ()
    combine: str = "all"
    campaigns: str | None = None
    may_pause: bool = False
    expr_override: str | None = None
    description: str = ""
    # Auto-pausing (may_pause rules only; see autopause.engine). Durations as labels ("15m").
    resume_threshold: float | None = None  # auto-resume past it (other side); None: a human resumes
    resume_for: str = "0s"  # how long the resume condition must hold ("0s": the rule's ``for``)
    cooldown: str = "1h"  # at least this long between two actions on a campaign
    max_cycles_per_day: int = 3  # pauses in 24 h before the campaign is put on hold for a human
    min_campaign_age: str = "0s"  # no decision while a campaign is younger (learning phase)
    settle: str = "0s"  # judge the window that ended this long ago: late sales have arrived
    # What a decision does: ``pause`` (may_pause rules), or ``notify`` (recorded and reported,
    # nothing acted on); ``pause_for: rest_of_day`` resumes at the campaign's next midnight.
    action: str = "pause"
    pause_for: str | None = None

    @property
    def decides(self) -> bool:
        """Whether the workers make auto-pause decisions for it (pause or notify)."""
        return self.may_pause or self.action == "notify"

    # The first condition's fields: what a single-condition rule is.
    @property
    def first(self) -> Condition:
        return self.conditions[0]

    @property
    def compound(self) -> bool:
        return len(self.conditions) > 1

    @property
    def kpi(self) -> str | None:
        return self.conditions[0].kpi if self.conditions else None

    @property
    def window(self) -> str | None:
        return self.conditions[0].window if self.conditions else None

    @property
    def op(self) -> str | None:
        return self.conditions[0].op if self.conditions else None

    @property
    def threshold(self) -> float | None:
        return self.conditions[0].threshold if self.conditions else None

    @property
    def confident(self) -> bool:
        return bool(self.conditions) and self.conditions[0].confident

    @property
    def min_volume(self) -> MinVolume | None:
        return self.conditions[0].min_volume if self.conditions else None

    @property
    def target(self) -> str | None:
        return self.conditions[0].target if self.conditions else None

    @property
    def after(self) -> str:
        return self.conditions[0].after if self.conditions else "0s"

    @property
    def for_seconds(self) -> float:
        return parse_duration(self.for_)

    def seconds(self, field_name: str) -> float:
        return parse_duration(getattr(self, field_name))

    @property
    def alert_name(self) -> str:
        return "Kpi" + "".join(part.capitalize() for part in self.name.split("_"))

    def expr(self) -> str:
        """PromQL returning one series per campaign (or pipeline problem) while the rule holds;
        a campaign's series carries its plan's owner and team (``with_owner``)."""
        if self.kind == "pipeline":
            return self.expr_override or ""
        return with_owner(self.condition())

    def condition(self) -> str:
        """The KPI rule's condition in PromQL, without the routing labels. A compound rule's
        conditions are reduced to one series per campaign each (``max by (campaign)``: the
        first condition's value where it has one), then joined on the campaign."""
        if not self.compound:
            return self.first.promql(self.campaigns, self.settle)
        joiner = " and on (campaign) " if self.combine == "all" else " or on (campaign) "
        return joiner.join(
            f"max by (campaign) ({c.promql(self.campaigns, self.settle)})" for c in self.conditions
        )

    def judges(
        self,
        targets: Mapping[str, float],
        baselines: Mapping[tuple[str, str, str], float | None] | None = None,
    ) -> bool:
        """Whether a campaign with these plan targets and baselines can meet the rule at all: a
        condition against a missing target, or a baseline it has none of yet (cold start), never
        holds (no ``kpi_plan_target`` or ``kpi_baseline`` series to compare with)."""
        baselines = baselines or {}
        met = [
            (c.target is None or c.target in targets)
            and (c.baseline_ref is None or baselines.get(c.baseline_ref.key) is not None)
            for c in self.conditions
        ]
        return all(met) if self.combine == "all" else any(met)

    @cached_property
    def baselines(self) -> tuple[BaselineRef, ...]:
        """The baselines its conditions read."""
        return tuple(c.baseline_ref for c in self.conditions if c.baseline_ref is not None)

    def labels(self) -> dict[str, str]:
        labels = {"severity": self.severity, "rule": self.name}
        if self.kind == "kpi":
            labels["kpi"] = self.kpi or ""
            labels["may_pause"] = "true" if self.may_pause else "false"
        return labels

    def annotations(self) -> dict[str, str]:
        subject = "campaign {{ $labels.campaign }}: " if self.kind == "kpi" else ""
        return {"summary": subject + self.summary, "description": self.description}


ROUTING_LABELS = ("owner", "team")


def with_owner(expr: str) -> str:
    """``expr`` with the campaign's plan labels (owner, team) added where it has a plan, for
    routing its alerts (``kpi_plan_info`` is 1: the value is the KPI's); unchanged without."""
    labels = ", ".join(ROUTING_LABELS)
    # One label set per campaign even if two workers export different ones (a campaign split
    # over partitions): topk picks one, so the join never fails as many-to-many.
    info = f"topk by (campaign) (1, max by (campaign, {labels}) ({m.PLAN_INFO.name}))"
    return (
        f"(({expr}) * on (campaign) group_left ({labels}) {info}) "
        f"or (({expr}) unless on (campaign) {m.PLAN_INFO.name})"
    )


def _selector(
    window: str | None,
    campaigns: str | None,
    event_type: str | None,
    period: str | None = None,
) -> str:
    parts = []
    if event_type:
        parts.append(f'event_type="{event_type}"')
    if period:
        parts.append(f'period="{period}"')
    if window:
        parts.append(f'window="{window}"')
    if campaigns:
        parts.append(f'campaign=~"{campaigns}"')
    return "{" + ",".join(parts) + "}"


def _number(value: float | None) -> str:
    """As short as it reads, but never rounded: PromQL must compare with the worker's number."""
    if value is None:
        return "NaN"
    short = format(value, "g")
    return short if float(short) == value else repr(value)


def _duration(value: Any, where: str) -> str:
    try:
        return format_duration(parse_duration(str(value)))
    except ValueError as exc:
        raise RuleError(f"{where}: {exc}") from None


def parse_rules(document: dict) -> list[Rule]:
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise RuleError("the rules file needs a top-level 'rules:' list")
    defaults = document.get("defaults") or {}
    rules, seen = [], set()
    for index, raw in enumerate(document["rules"]):
        if not isinstance(raw, dict):
            raise RuleError(f"rules[{index}] must be a mapping")
        rule = _parse_rule({**defaults, **raw}, f"rules[{index}]")
        if rule.name in seen:
            raise RuleError(f"rule {rule.name}: name used twice")
        seen.add(rule.name)
        rules.append(rule)
    return rules


_CONDITION_FIELDS = ("kpi", "window", "op", "threshold", "confident", "min_volume", "after")


def _parse_rule(raw: dict, where: str) -> Rule:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleError(f"{where}.name: snake_case name required, got {name!r}")
    where = f"rule {name}"
    known = {
        "name",
        "summary",
        "description",
        "severity",
        "for",
        "kind",
        "campaigns",
        "may_pause",
        "expr",
        *COMBINE,
        *_CONDITION_FIELDS,
        *_PAUSE_FIELDS,
        "action",
        "pause_for",
    }
    unknown = set(raw) - known
    if unknown:
        raise RuleError(f"{where}: unknown field(s) {sorted(unknown)}")
    severity = raw.get("severity")
    if severity not in SEVERITIES:
        raise RuleError(f"{where}.severity: one of {SEVERITIES}, got {severity!r}")
    summary = raw.get("summary")
    if not isinstance(summary, str) or not summary:
        raise RuleError(f"{where}.summary: a sentence for the on-call person is required")
    common = {
        "name": name,
        "summary": summary,
        "severity": severity,
        "for_": _duration(raw.get("for", "0s"), f"{where}.for"),
        "description": str(raw.get("description", "")),
    }
    kind = raw.get("kind", "kpi")
    if kind == "pipeline":
        expr = raw.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            raise RuleError(f"{where}.expr: a pipeline rule needs a PromQL expression")
        return Rule(kind="pipeline", expr_override=" ".join(expr.split()), **common)
    if kind != "kpi":
        raise RuleError(f"{where}.kind: 'kpi' or 'pipeline', got {kind!r}")
    combined = [c for c in COMBINE if c in raw]
    if len(combined) > 1:
        raise RuleError(f"{where}: either all: or any:, not both")
    if combined:
        combine = combined[0]
        inline = sorted(f for f in _CONDITION_FIELDS if f in raw)
        if inline:
            raise RuleError(f"{where}: {inline} belong in the conditions of {combine}:")
        listed = raw[combine]
        if not isinstance(listed, list) or len(listed) < 2:
            raise RuleError(f"{where}.{combine}: a list of two or more conditions")
        conditions = []
        for index, item in enumerate(listed):
            here = f"{where}.{combine}[{index}]"
            if not isinstance(item, dict):
                raise RuleError(f"{here}: a mapping of {', '.join(_CONDITION_FIELDS)}")
            extra = sorted(set(item) - set(_CONDITION_FIELDS))
            if extra:
                raise RuleError(f"{here}: unknown field(s) {extra}")
            conditions.append(_parse_condition(item, here))
    else:
        combine = "all"
        conditions = [_parse_condition(raw, where)]
    campaigns = raw.get("campaigns")
    if campaigns is not None:
        try:
            re.compile(campaigns)
        except (re.error, TypeError) as exc:
            raise RuleError(f"{where}.campaigns: not a regular expression: {exc}") from None
        if '"' in campaigns or "\\" in campaigns:
            raise RuleError(f"{where}.campaigns: quotes and backslashes are not supported")
    may_pause = bool(raw.get("may_pause", False))
    first = conditions[0]
    if "resume_threshold" in raw and len(conditions) > 1:
        raise RuleError(
            f"{where}.resume_threshold: a compound rule is resumed by a human "
            "(or pause_for), not by one KPI crossing back"
        )
    pause = _pause_fields(
        raw,
        where,
        may_pause,
        first.op,
        first.threshold,
        all(KPIS[c.kpi].windowed for c in conditions),
        first,
    )
    action = raw.get("action", "pause")
    if action not in ACTIONS:
        raise RuleError(f"{where}.action: one of {ACTIONS}, got {action!r}")
    if action == "notify" and may_pause:
        raise RuleError(f"{where}.action: a notify rule does not pause: drop may_pause")
    pause_for = raw.get("pause_for")
    if pause_for is not None:
        if pause_for not in PAUSE_FOR:
            raise RuleError(f"{where}.pause_for: one of {PAUSE_FOR}, got {pause_for!r}")
        if not may_pause:
            raise RuleError(f"{where}.pause_for: only a rule with may_pause: true pauses")
        if "resume_threshold" in raw:
            raise RuleError(f"{where}.pause_for: the pause ends at midnight; drop resume_threshold")
    horizons = {w for c in conditions for w in c.windows} & set(HORIZONS)
    if pause.get("settle", "0s") != "0s" and horizons:
        raise RuleError(f"{where}.settle: the long horizons are judged as they stand")
    if pause.get("settle", "0s") != "0s" and any(c.baseline for c in conditions):
        raise RuleError(f"{where}.settle: a baseline is judged against the current window")
    return Rule(
        kind="kpi",
        conditions=tuple(conditions),
        combine=combine,
        campaigns=campaigns,
        may_pause=may_pause,
        action=action,
        pause_for=pause_for,
        **common,
        **pause,
    )


def _parse_condition(raw: dict, where: str) -> Condition:
    kpi = raw.get("kpi")
    if kpi not in KPIS:
        raise RuleError(f"{where}.kpi: one of {sorted(KPIS)}, got {kpi!r}")
    source = KPIS[kpi]
    window = None
    if source.windowed:
        if "window" not in raw:
            raise RuleError(f"{where}.window: required for {kpi}")
        window = _window(raw["window"], f"{where}.window")
        if window in HORIZONS and not source.horizons:
            raise RuleError(
                f"{where}.window: {kpi} is computed over the trailing windows only, not {window}"
            )
        _check_horizon(kpi, source.event_type, window, f"{where}.window")
    op = raw.get("op")
    if op not in ("<", ">"):
        raise RuleError(f"{where}.op: '<' or '>', got {op!r}")
    target, baseline, threshold = _threshold(raw.get("threshold"), f"{where}.threshold", kpi)
    if baseline is not None:
        if kpi not in BASELINE_KPIS:
            raise RuleError(
                f"{where}.threshold.baseline: a baseline is of sums over buckets "
                f"({', '.join(sorted(BASELINE_KPIS))}), not {kpi}"
            )
        try:
            check_window(baseline, None if window in HORIZONS else _millis(window))
        except BaselineError as exc:
            raise RuleError(f"{where}.window: {exc}") from None
    confident = bool(raw.get("confident", False))
    if confident and not source.rate:
        raise RuleError(
            f"{where}.confident: only rate KPIs have confidence bounds "
            f"({sorted(k for k, s in KPIS.items() if s.rate)})"
        )
    min_volume = None
    if raw.get("min_volume") is not None:
        mv = raw["min_volume"]
        if (
            not isinstance(mv, dict)
            or mv.get("event_type") not in EVENT_TYPES
            or not isinstance(mv.get("count"), int)
            or mv["count"] < 1
        ):
            raise RuleError(
                f"{where}.min_volume: needs event_type (one of {EVENT_TYPES}) and count >= 1"
            )
        volume_window = mv.get("window", window)
        if volume_window is None:
            raise RuleError(f"{where}.min_volume.window: required for a KPI without a window")
        min_volume = MinVolume(
            mv["event_type"], mv["count"], _window(volume_window, f"{where}.min_volume.window")
        )
        _check_horizon(
            f"{mv['event_type']}s", mv["event_type"], min_volume.window, f"{where}.min_volume"
        )
    after = _duration(raw.get("after", "0s"), f"{where}.after")
    if parse_duration(after) >= 86400:
        raise RuleError(f"{where}.after: the part of a day to wait, under 24h, got {after}")
    if after != "0s" and source.period is None:
        raise RuleError(
            f"{where}.after: only budget KPIs wait for the first hours of a day "
            "(kpi_day_elapsed_seconds is exported for campaigns with a budget)"
        )
    return Condition(kpi, window, op, threshold, confident, min_volume, target, after, baseline)


def _millis(window: str | None) -> int | None:
    return None if window is None else int(parse_duration(window) * 1000)


def _check_horizon(kpi: str, event_type: str | None, window: str | None, where: str) -> None:
    """What the workers export over the long horizons (``stream.exposition``): counts other
    than sales contacts over today, 7d and 30d; over the flight, revenue and spend only."""
    if window not in HORIZONS:
        return
    if window == "flight" and kpi not in ("revenue", "spend"):
        raise RuleError(f"{where}: over the flight only revenue and spend are exported, not {kpi}")
    if event_type is not None and event_type not in HORIZON_EVENT_TYPES:
        raise RuleError(f"{where}: sales contacts are not counted over {window}")


def _window(value: Any, where: str) -> str:
    """A trailing window (a duration such as 15m) or a long horizon (today, 7d, 30d, flight)."""
    if value in HORIZONS:
        return str(value)
    return _duration(value, where)


def _threshold(
    value: Any, where: str, kpi: str, relative: Condition | None = None
) -> tuple[str | None, Baseline | None, float]:
    """(target, baseline, number): a fixed threshold; ``{target: cpa, factor: 1.2}``, a factor
    of the campaign's own target; or ``{baseline: {same_hour_of_week: 4w}, factor: 0.5}``, a
    factor of its own normal. With ``relative`` (a resume threshold): the same form as its."""
    want_target = relative.target if relative else None
    want_baseline = relative.baseline if relative else None
    if isinstance(value, dict):
        kinds = [k for k in ("target", "baseline") if k in value]
        if set(value) - {"target", "baseline", "factor"} or len(kinds) != 1:
            raise RuleError(
                f"{where}: a number, {{target: <plan target>, factor: <number>}} or "
                "{baseline: {same_hour_of_week: 4w}, factor: <number>}"
            )
        factor = value.get("factor", 1)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor <= 0:
            raise RuleError(f"{where}.factor: a number above 0 is required")
        if kinds == ["baseline"]:
            try:
                baseline = parse_baseline(value["baseline"])
            except BaselineError as exc:
                raise RuleError(f"{where}.baseline: {exc}") from None
            if relative is not None and baseline != want_baseline:
                raise RuleError(f"{where}.baseline: must be the threshold's baseline")
            return None, baseline, float(factor)
        name = value["target"]
        if name not in PLAN_TARGETS:
            raise RuleError(f"{where}.target: one of the plan targets {sorted(PLAN_TARGETS)}")
        # A plan's targets are named by the KPI they are for; a money target also bounds any
        # money KPI (a stop-loss: spend today over twice the target CPA).
        money = PLAN_TARGETS[name][0] == "money" and kpi in MONEY_KPIS
        if name != kpi and not money:
            raise RuleError(f"{where}.target: {name} is a target for {name}, not {kpi}")
        if relative is not None and name != want_target:
            raise RuleError(f"{where}.target: must be the rule's threshold target ({want_target})")
        return name, None, float(factor)
    if want_target is not None or want_baseline is not None:
        if want_target is not None:
            raise RuleError(
                f"{where}: the threshold is relative to {want_target}: give {{target, factor}}"
            )
        raise RuleError(
            f"{where}: the threshold is relative to a baseline: give {{baseline, factor}}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleError(f"{where}: a number is required")
    return None, None, float(value)


_PAUSE_FIELDS = (
    "resume_threshold",
    "resume_for",
    "cooldown",
    "max_cycles_per_day",
    "min_campaign_age",
    "settle",
)


def _pause_fields(
    raw: dict,
    where: str,
    may_pause: bool,
    op: str,
    threshold: float,
    windowed: bool,
    first: Condition,
) -> dict[str, Any]:
    pause_only = sorted(name for name in _PAUSE_FIELDS if name in raw and name != "settle")
    notify = raw.get("action") == "notify"
    if pause_only and not may_pause and not (notify and "resume_threshold" not in pause_only):
        raise RuleError(f"{where}: {pause_only} only apply to rules with may_pause: true")
    out: dict[str, Any] = {}
    for name in ("resume_for", "cooldown", "min_campaign_age", "settle"):
        if name in raw:
            out[name] = _duration(raw[name], f"{where}.{name}")
    if "settle" in out and out["settle"] != "0s" and not windowed:
        raise RuleError(f"{where}.settle: only a windowed KPI can be judged on an older window")
    if "max_cycles_per_day" in raw:
        cycles = raw["max_cycles_per_day"]
        if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
            raise RuleError(f"{where}.max_cycles_per_day: a whole number >= 1 is required")
        out["max_cycles_per_day"] = cycles
    if "resume_threshold" in raw:
        _, _, resume = _threshold(
            raw["resume_threshold"], f"{where}.resume_threshold", first.kpi, first
        )
        # Hysteresis: resuming must need a KPI at least as good as the one that paused.
        if (op == "<" and resume < threshold) or (op == ">" and resume > threshold):
            side = "at or above" if op == "<" else "at or below"
            raise RuleError(
                f"{where}.resume_threshold: must be {side} the threshold "
                f"({_number(threshold)}), or the campaign would flap"
            )
        out["resume_threshold"] = float(resume)
    return out
