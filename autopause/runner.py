"""One decision tick over the partitions a worker owns: figures from the exact state, trust from
lag, event time and late share, the engine, and the records and decisions to write.

No Kafka here: the worker (``agents.decisions``) writes the records, sends the decisions, then
writes the records again with their outboxes cleared (``sent``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rulebook.rules import KPIS, Condition, Rule, RuleError, parse_rules
from stream.baselines import BaselineRef
from stream.campaign import CampaignState
from stream.codec import Record
from stream.durations import parse_duration
from stream.events import EVENT_TYPES
from stream.exposition import window_labels
from stream.horizons import HORIZONS
from stream.kpis import RATIO_BY_KEY, REVENUE, SPEND
from stream.settings import Settings, SettingsError
from stream.snapshot import CampaignRow
from stream.state import OTHER, PartitionState
from stream.steps import run_to_end
from stream.windows import bucket_start

from . import records
from .engine import (
    DAY_MS,
    HELD,
    IDLE,
    NOTIFIED,
    PAUSED,
    RUNNING,
    Breaker,
    Campaign,
    Decision,
    Input,
    Trust,
    advance,
    breaker_scopes,
    release,
    settle_orphans,
)
from .evaluate import Evaluation, Figures, WindowFigures, evaluate, selects

SHIPPED_RULES = Path(__file__).resolve().parent.parent / "ops" / "kpi-rules.yaml"
_KIND = {name: kind for kind, name in enumerate(EVENT_TYPES)}
_OPPOSITE = {"<": ">", ">": "<"}
# kpi_autopause_campaigns{state}; no_baseline: campaigns a baseline rule cannot judge yet.
STATES = ("pending", "paused", "held", "notified", "unknown", "suppressed", "no_baseline")
STEP = 50  # campaigns judged between two yields of ``Runner.tick_steps``


def read_rules(settings: Settings) -> list[Rule]:
    """Every rule of ``KPI_RULES`` (default: the shipped file); raises SettingsError naming it."""
    path = Path(settings.rules_path) if settings.rules_path else SHIPPED_RULES
    try:
        return parse_rules(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise SettingsError(f"KPI_RULES: cannot read {path}: {exc.strerror}") from None
    except (RuleError, yaml.YAMLError) as exc:
        raise SettingsError(f"KPI_RULES: {path}: {exc}") from None


def baselines_read(settings: Settings, rules: list[Rule] | None = None) -> tuple[BaselineRef, ...]:
    """The baselines the KPI rules read, which the workers export (``kpi_baseline``) for the
    Prometheus rules and judge by; checked against the hour buckets kept."""
    rules = read_rules(settings) if rules is None else rules
    refs: dict[tuple[str, str, str], BaselineRef] = {}
    long_ms = settings.long_bucket_seconds * 1000
    for rule in rules:
        for ref in rule.baselines if rule.kind == "kpi" else ():
            if ref.window_ms % long_ms:
                raise SettingsError(
                    f"KPI_RULES: rule {rule.name}: a baseline of {ref.window} needs whole "
                    f"KPI_LONG_BUCKET buckets ({settings.long_bucket_seconds}s)"
                )
            back = ref.baseline.span_ms + ref.window_ms + long_ms
            if back > settings.long_retention_seconds * 1000:
                raise SettingsError(
                    f"KPI_RULES: rule {rule.name}: its baseline reads {back // 3_600_000}h "
                    f"back, beyond KPI_LONG_RETENTION ({settings.long_retention_seconds}s)"
                )
            refs.setdefault(ref.key, ref)
    return tuple(refs[k] for k in sorted(refs))


def load_rules(settings: Settings) -> list[Rule]:
    """The rules of ``KPI_RULES`` that decide (may_pause or notify), checked against the
    settings; raises SettingsError naming KPI_RULES."""
    rules = read_rules(settings)
    baselines_read(settings, rules)
    pausing = [r for r in rules if r.kind == "kpi" and r.decides]
    # The trailing windows of KPI_WINDOWS, and the long horizons every worker exports.
    exported = {*window_labels(w * 1000 for w in settings.windows_seconds), *HORIZONS}
    for rule in pausing:
        for window in {w for c in rule.conditions for w in c.windows}:
            if window not in exported:
                raise SettingsError(
                    f"KPI_RULES: rule {rule.name} reads the {window} window, which "
                    f"KPI_WINDOWS does not export ({', '.join(sorted(exported))})"
                )
        if rule.settle != "0s":
            if any(c.kpi in ("response_p50", "response_p95") for c in rule.conditions):
                raise SettingsError(
                    f"KPI_RULES: rule {rule.name}: settle applies to count and "
                    "money KPIs, not response quantiles"
                )
            read = [w for c in rule.conditions for w in c.windows]
            oldest = rule.seconds("settle") + max(parse_duration(w) for w in read)
            if oldest > settings.retention_seconds:
                raise SettingsError(
                    f"KPI_RULES: rule {rule.name} reads {oldest:g}s back, beyond "
                    f"the {settings.retention_seconds}s kept (raise KPI_GRACE)"
                )
    return pausing


def rule_kinds(rule: Rule) -> tuple[frozenset[int], frozenset[int]]:
    """The event kinds whose traffic drives the rule (its first condition's volume, or
    denominator: any one of them moving proves the feed alive), and every kind the rule's
    conditions read."""
    driving, read = condition_kinds(rule.first)
    for condition in rule.conditions[1:]:
        read = read | condition_kinds(condition)[1]
    return driving, read


def condition_kinds(rule: Condition) -> tuple[frozenset[int], frozenset[int]]:

    def kinds_of(source: str) -> set[int]:
        if source == REVENUE:
            return {_KIND["sale"]}
        if source == SPEND:
            # Cost comes on impressions or on clicks: a click tracker with costs and no
            # impression feed is a live spend feed (judged on the click watermark).
            return {_KIND["impression"], _KIND["click"]}
        return {_KIND[source]}

    kpi = rule.kpi
    if kpi in RATIO_BY_KEY:
        ratio = RATIO_BY_KEY[kpi]
        read = kinds_of(ratio.numerator) | kinds_of(ratio.denominator)
        driving = kinds_of(ratio.denominator)
    elif kpi == "revenue":
        read = driving = kinds_of(kpi)
    elif kpi == "spend" or KPIS[kpi].period is not None or kpi == "spend_outside_flight":
        read = driving = kinds_of("spend")  # the budget figures are spend against the plan
    elif kpi.startswith("response") or kpi in (
        "oldest_uncontacted_lead_age",
        "leads_awaiting_contact",
    ):
        read = {_KIND["lead"], _KIND["sales_contact"]}
        driving = {_KIND["lead"]}
    else:
        event_type = KPIS[kpi].event_type
        assert event_type is not None  # the remaining KPIs are event counts
        driving = {_KIND[event_type]}
        read = set(driving)
    if rule.min_volume is not None:
        driving = {_KIND[rule.min_volume.event_type]}
        read = read | driving
    return frozenset(driving), frozenset(read)


def watermark_of(state: PartitionState, kinds: frozenset[int]) -> int:
    """The event time the kinds' feeds have reached: the newest of them."""
    return max(state.meta.watermark[k] for k in kinds)


def figures_of(row: CampaignRow, labels: tuple[str, ...], now_ms: int) -> Figures:
    key = ("figures", labels)
    windows: dict[str, WindowFigures] | None = row.derived.get(key)  # type: ignore[assignment]
    if windows is None:
        windows = row.derived[key] = {
            label: WindowFigures(
                tuple(w.counts), w.revenue_micros, w.spend_micros, w.p50_ms, w.p95_ms
            )
            for label, w in zip(labels, row.windows)
        }
        for label, sums in row.horizons.items():
            windows[label] = WindowFigures(
                tuple(sums.counts), sums.revenue_micros, sums.spend_micros
            )
    return Figures(
        windows,
        row.awaiting,
        row.oldest_awaiting_age_seconds(now_ms),
        **plan_figures(row),
        baselines=row.baselines(),
    )


def plan_figures(row: CampaignRow) -> dict:
    """The figures of ``row`` that its plan gives: targets, budget figures, the day elapsed
    (the same values ``/metrics`` exports: ``stream.exposition``)."""
    if row.plan is None:
        return {}
    budget = {}
    pace = row.pacing()
    if pace is not None:
        for kpi, value in (
            ("budget_used", pace.budget_used_ratio),
            ("budget_pacing", pace.pacing_ratio),
            ("flight_budget_used", pace.flight_budget_used_ratio),
            ("flight_pacing", pace.flight_pacing_ratio),
        ):
            if value is not None:
                budget[kpi] = value
    today = row.horizons.get("today")
    if row.outside_flight and today is not None:
        budget["spend_outside_flight"] = today.spend_micros / 1_000_000
    elapsed = row.day_elapsed_s if row.plan.budgets else None  # exported with a budget only
    return {"targets": row.plan.targets, "budget": budget, "day_elapsed_s": elapsed}


def settled_figures(
    state: CampaignState,
    at_ms: int,
    windows_ms: tuple[int, ...],
    labels: tuple[str, ...],
    bucket_ms: int,
) -> Figures:
    """Window sums of the windows that ended at ``at_ms`` (no response quantiles)."""
    sums = state.window_totals(bucket_start(at_ms, bucket_ms), windows_ms, bucket_ms)
    return Figures(
        {
            label: WindowFigures(tuple(t.counts), t.revenue_micros, t.spend_micros)
            for label, t in zip(labels, sums)
        }
    )


def row_static(rule: Rule) -> bool:
    """Whether ``rule`` judges a campaign by its row's sums alone: no settled window, no KPI
    that moves with the clock (budget figures, the oldest lead's age), no time of day."""
    return rule.settle == "0s" and all(
        (KPIS[c.kpi].windowed or c.kpi == "leads_awaiting_contact") and c.after == "0s"
        for c in rule.conditions
    )


def holding_conditions(
    rules: list[Rule], evaluations: Mapping[str, Evaluation]
) -> tuple[dict, ...]:
    """The conditions that hold under the rules whose evaluation holds: each with its KPI,
    window, value and the threshold it was compared with."""
    out = []
    for rule in rules:
        evaluation = evaluations.get(rule.name)
        if evaluation is None or not evaluation.holds:
            continue
        parts = evaluation.parts or (evaluation,)
        for condition, part in zip(rule.conditions, parts):
            if part.holds:
                out.append(
                    {
                        "rule": rule.name,
                        "kpi": condition.kpi,
                        "window": condition.window,
                        "value": part.value,
                        "threshold": part.threshold,
                    }
                )
    return tuple(out)


def _evaluations(rule: Rule, figures: Figures) -> tuple[Evaluation, Evaluation | None]:
    """The rule's evaluation, and its resume condition's (None without a resume threshold)."""
    resume = (
        None
        if rule.resume_threshold is None
        else evaluate(rule, figures, op=_OPPOSITE[rule.op or "<"], threshold=rule.resume_threshold)
    )
    return evaluate(rule, figures), resume


@dataclass
class TickResult:
    records: list[Record]  # to write (and have acknowledged) before sending
    to_send: list[tuple[int, dict]]  # (partition, decision JSON), in issue order
    breaker: dict[str, frozenset[str]]  # rule -> open scopes ("*" all campaigns, or channels)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (rule, state) -> campaigns


class Runner:
    def __init__(self, rules: list[Rule], settings: Settings) -> None:
        self.rules = [r for r in rules if r.kind == "kpi" and r.decides]
        self.settings = settings
        self.windows_ms = tuple(sorted(w * 1000 for w in settings.windows_seconds))
        self.labels = window_labels(self.windows_ms)
        self.bucket_ms = settings.bucket_seconds * 1000
        self.breaker = Breaker(
            settings.breaker_share,
            settings.breaker_min_campaigns,
            settings.breaker_window_seconds * 1000,
        )
        self.kinds = {r.name: rule_kinds(r) for r in self.rules}
        # Rules whose evaluation reads only a row's sums (no clock figure, no settled window):
        # evaluated once per row, however many rounds judge it (rows are carried while their
        # sums stand: ``stream.snapshot.RowCache``).
        self._row_static = {r.name: row_static(r) for r in self.rules}
        self._selected: dict[str, list[Rule]] = {}  # campaign -> the rules that select it
        self._late_seen: tuple[list[int], list[int]] | None = None  # (late, totals) by kind
        self._dirty: set[tuple[int, str]] = set()  # (partition, campaign) to write
        # The last round's campaigns whose condition holds under some rule, with what holds
        # (the live page colours them): campaign -> ({rule, kpi, window, value, threshold}, ...)
        self.holding: dict[str, tuple[dict, ...]] = {}

    # -- trust ----------------------------------------------------------------------------------

    def _late_shares(self, states: list[PartitionState], rows: list[CampaignRow]) -> list[float]:
        """Per kind, the share of late events among those folded since the last tick."""
        late = [sum(s.meta.late[k] for s in states) for k in range(len(EVENT_TYPES))]
        totals = [0] * len(EVENT_TYPES)
        for row in rows:
            for k, n in enumerate(row.kind_totals()):
                totals[k] += n
        previous, self._late_seen = self._late_seen, (late, totals)
        if previous is None:
            return [0.0] * len(EVENT_TYPES)
        shares = []
        for k in range(len(EVENT_TYPES)):
            new = totals[k] - previous[1][k]
            shares.append((late[k] - previous[0][k]) / new if new > 0 else 0.0)
        return shares

    def _trust(
        self,
        rule: Rule,
        state: PartitionState,
        now_ms: int,
        lag: Mapping[tuple[str, int], int],
        late_shares: list[float],
    ) -> Trust:
        driving, read = self.kinds[rule.name]
        inputs = self.settings.topics.inputs()
        unknown = [inputs[k] for k in sorted(read) if (inputs[k], state.partition) not in lag]
        if unknown:  # just assigned: nothing fetched yet, so how far behind is not known
            return Trust(False, f"recovering: no end offset yet for {', '.join(unknown)}")
        behind = sum(lag[(inputs[k], state.partition)] for k in read)
        if behind > self.settings.decision_max_lag:
            return Trust(False, f"lagging: {behind} messages behind")
        watermark = watermark_of(state, driving)
        if now_ms - watermark > self.settings.decision_max_stall_seconds * 1000:
            kinds = " or ".join(EVENT_TYPES[k] for k in sorted(driving))
            return Trust(
                False,
                f"event time stalled: no {kinds} event newer than {(now_ms - watermark) // 1000}s",
            )
        worst = max(late_shares[k] for k in read)
        if worst > self.settings.decision_max_late_share:
            return Trust(False, f"late share {worst:.1%}")
        return Trust(True)

    # -- the tick -------------------------------------------------------------------------------

    def tick(
        self,
        now_ms: int,
        states: Iterable[PartitionState],
        rows: Iterable[CampaignRow],
        lag: Mapping[tuple[str, int], int],
        *,
        mode: str,
        owned: Callable[[PartitionState], bool] = lambda state: True,
    ) -> TickResult:
        """``tick_steps`` in one go."""
        return run_to_end(self.tick_steps(now_ms, states, rows, lag, mode=mode, owned=owned))

    def tick_steps(
        self,
        now_ms: int,
        states: Iterable[PartitionState],
        rows: Iterable[CampaignRow],
        lag: Mapping[tuple[str, int], int],
        *,
        mode: str,
        owned: Callable[[PartitionState], bool] = lambda state: True,
    ) -> Generator[None, None, TickResult]:
        """One decision round, as a generator that yields every ``STEP`` campaigns so that the
        caller can let its event loop run (at 5,000 campaigns a round is ~100 ms of work).

        Between yields the caller may fold events (the round judges the rows it was given) or lose
        partitions: a campaign of a partition ``owned`` no longer vouches for is left untouched,
        and its new owner decides."""
        states = sorted(states, key=lambda s: s.partition)
        rows = list(rows)
        late_shares = self._late_shares(states, rows)
        row_of = {row.campaign: row for row in rows}
        owner: dict[str, PartitionState] = {}
        campaigns: dict[str, Campaign] = {}
        inputs: dict[str, Input] = {}
        trust_of: dict[int, dict[str, Trust]] = {}
        remember_new = any(r.min_campaign_age != "0s" for r in self.rules)
        cold: dict[str, int] = {}  # rule -> campaigns without the baseline it reads (yet)
        holding: dict[str, tuple[dict, ...]] = {}
        done = 0
        for state in states:
            trust = trust_of[state.partition] = {
                r.name: self._trust(r, state, now_ms, lag, late_shares) for r in self.rules
            }
            for name, campaign_state in list(state.campaigns.items()):
                row = row_of.get(name)
                if name == OTHER or row is None or name in owner:
                    continue  # a campaign in two partitions (keyed otherwise): the first decides
                rules = self._selected.get(name)
                if rules is None:
                    if len(self._selected) > 4 * len(row_of) + 1000:  # retired campaigns
                        self._selected = {}
                    rules = self._selected[name] = [r for r in self.rules if selects(r, name)]
                if not rules:
                    continue
                owner[name] = state
                entry = state.autopause.get(name)
                if entry is None:
                    first_seen = (
                        min(now_ms, campaign_state.first_start)
                        if campaign_state.has_buckets
                        else now_ms
                    )
                    campaign = state.autopause[name] = Campaign(first_seen)
                    if remember_new:  # the learning phase outlives the buckets
                        self._dirty.add((state.partition, name))
                else:
                    campaign = state.autopause[name] = records.campaign_of(entry, now_ms)
                campaigns[name] = campaign
                now_figures = figures_of(row, self.labels, now_ms)
                evaluations: dict[str, Evaluation] = {}
                resumes: dict[str, Evaluation | None] = {}
                for rule in rules:
                    judged_key = ("judged", id(rule))
                    reach: tuple[bool, bool] | None = row.derived.get(judged_key)  # type: ignore[assignment]
                    if reach is None:  # from the row's plan and baselines: once per row
                        reach = row.derived[judged_key] = (
                            any(now_figures.baselines.get(r.key) is None for r in rule.baselines),
                            rule.judges(now_figures.targets, now_figures.baselines),
                        )
                    is_cold, can_judge = reach
                    if is_cold:
                        cold[rule.name] = cold.get(rule.name, 0) + 1
                    if not can_judge and campaign.tracks.get(rule.name, IDLE) == IDLE:
                        # No target of its own or by default: not judged by the rule. A campaign
                        # the rule already tracks (pending, paused) is stepped on (its condition
                        # no longer holds, as in Prometheus): a pause waits for a human.
                        continue
                    figures = (
                        now_figures
                        if rule.settle == "0s"
                        else settled_figures(
                            campaign_state,
                            now_ms - int(rule.seconds("settle") * 1000),
                            self.windows_ms,
                            self.labels,
                            self.bucket_ms,
                        )._replace(
                            targets=now_figures.targets,
                            budget=now_figures.budget,
                            day_elapsed_s=now_figures.day_elapsed_s,
                            baselines=now_figures.baselines,
                        )
                    )
                    both: tuple[Evaluation, Evaluation | None]
                    if self._row_static[rule.name]:
                        cached_key = ("evaluations", id(rule))
                        cached = row.derived.get(cached_key)
                        if cached is None:
                            cached = row.derived[cached_key] = _evaluations(rule, figures)
                        both = cached  # type: ignore[assignment]
                    else:
                        both = _evaluations(rule, figures)
                    evaluations[rule.name], resumes[rule.name] = both
                inputs[name] = Input(
                    evaluations,
                    resumes,
                    trust,
                    _main_channel(row),
                    row.day_end_ms,
                    row.day_start_ms,
                )
                breaching = holding_conditions(rules, evaluations)
                if breaching:
                    holding[name] = breaching
                done += 1
                if done % STEP == 0:
                    yield
        self.holding = holding
        judged: dict[tuple[int, str], int] = {}  # (partition, rule) -> campaigns judged
        for name, data in inputs.items():
            for rule_name in data.evaluations:
                key = (owner[name].partition, rule_name)
                judged[key] = judged.get(key, 0) + 1
        scopes = breaker_scopes(self.rules, campaigns, inputs, now_ms, self.breaker)
        yield
        # Tracks no rule steps first: their decisions take their seqs before this round's others
        # and are sent first (a pauser drops a seq below one it has handled).
        orphans = yield from self._orphans(states, inputs, owner, owned, now_ms)
        decisions = []
        for i, name in enumerate(sorted(inputs)):
            state = owner[name]
            if owned(state):
                issued, changed = advance(
                    self.rules, name, campaigns[name], inputs[name], now_ms, scopes
                )
                decisions += issued
                if changed or issued:
                    self._dirty.add((state.partition, name))
            if (i + 1) % STEP == 0:
                yield
        by_name = {r.name: r for r in self.rules}
        ttl_ms = self.settings.decision_ttl_seconds * 1000
        topics = self.settings.topics.inputs()
        to_send = []
        for state, decision in orphans:
            body = records.orphan_decision_json(
                decision, partition=state.partition, mode=mode, ttl_ms=ttl_ms
            )
            entry = state.autopause[decision.campaign]
            assert isinstance(entry, Campaign)  # made live by ``_orphans``
            entry.outbox.append(body)
            to_send.append((state.partition, body))
        for decision in decisions:
            state = owner[decision.campaign]
            rule = by_name[decision.rule]
            rule_trust = trust_of[state.partition][rule.name]
            driving, read = self.kinds[rule.name]
            body = records.decision_json(
                decision,
                rule,
                partition=state.partition,
                mode=mode,
                ttl_ms=ttl_ms,
                context={
                    "watermark": records.iso(watermark_of(state, driving)),
                    "lag_messages": sum(lag.get((topics[k], state.partition), 0) for k in read),
                    "trusted": rule_trust.trusted,
                    "distrust": rule_trust.reason or None,
                    "breaker_open": sorted(scopes.open(rule.name)),
                },
            )
            body["campaigns_judged"] = judged.get((state.partition, rule.name), 0)
            campaigns[decision.campaign].outbox.append(body)
            to_send.append((state.partition, body))
        kept = [s for s in states if owned(s)]
        out = self._changed_records(kept, now_ms)
        self._dirty = {k for k in self._dirty if k[0] in {s.partition for s in kept}}
        counts = self._counts(states, now_ms)
        for rule_name, n in cold.items():
            counts[(rule_name, "no_baseline")] = n
        return TickResult(out, to_send, {r.name: scopes.open(r.name) for r in self.rules}, counts)

    def _orphans(
        self,
        states: list[PartitionState],
        inputs: Mapping[str, Input],
        owner: Mapping[str, PartitionState],
        owned: Callable[[PartitionState], bool],
        now_ms: int,
    ) -> Generator[None, None, list[tuple[PartitionState, Decision]]]:
        """The tracks no rule stepped this round (their rule left the file, stopped deciding or
        selecting the campaign, or the campaign has no row any more): their promises kept
        (``engine.orphan_step``), the rest dropped. The decisions issued (resumes at midnight),
        with the state they belong to."""
        out: list[tuple[PartitionState, Decision]] = []
        seen = 0
        for state in states:
            for name in list(state.autopause):
                if not owned(state):  # lost while the caller yielded: its new owner keeps them
                    break
                value = state.autopause[name]
                # Stepped only where the round judged the campaign: a campaign in two partitions
                # is judged by one; the other's tracks are orphans there.
                stepped = inputs[name].evaluations if owner.get(name) is state else {}
                names = value.tracks if isinstance(value, Campaign) else _track_names(value)
                if all(rule in stepped for rule in names):
                    continue
                campaign = state.autopause[name] = records.campaign_of(value, now_ms)
                issued, changed = settle_orphans(name, campaign, stepped, now_ms)
                if changed:
                    self._dirty.add((state.partition, name))
                out.extend((state, decision) for decision in issued)
                seen += 1
                if seen % STEP == 0:
                    yield
        return out

    def release(
        self, states: Iterable[PartitionState], campaign: str, rule: str | None, now_ms: int
    ) -> tuple[list[dict], list[Record]]:
        """An operator takes a held campaign back (all its held rules, or ``rule``): each track
        released (``engine.release``), and the records to write. What was released, as
        ``{"partition", "rule"}``; empty when nothing of the campaign is held here."""
        released: list[dict] = []
        touched = []
        for state in sorted(states, key=lambda s: s.partition):
            value = state.autopause.get(campaign)
            if value is None:
                continue
            entry = state.autopause[campaign] = records.campaign_of(value, now_ms)
            for name, track in sorted(entry.tracks.items()):
                if track.phase == HELD and rule in (None, name):
                    entry.tracks[name] = release(track)
                    released.append({"partition": state.partition, "rule": name})
                    self._dirty.add((state.partition, campaign))
            touched.append(state)
        return released, self._changed_records(touched, None)

    def sent(self, states: Iterable[PartitionState], sent: Iterable[dict]) -> list[Record]:
        """After the decisions topic acknowledged ``sent``: drop them from the outboxes."""
        ids = {d["decision_id"] for d in sent}
        states = list(states)
        for state in states:
            for name, value in state.autopause.items():
                if isinstance(value, Campaign) and value.outbox:
                    kept = [d for d in value.outbox if d["decision_id"] not in ids]
                    if len(kept) != len(value.outbox):
                        value.outbox = kept
                        self._dirty.add((state.partition, name))
        return self._changed_records(states, None)

    def unsent(self, states: Iterable[PartitionState], now_ms: int) -> list[tuple[int, dict]]:
        """Decisions a previous owner issued but may not have sent (restored outboxes)."""
        out: list[tuple[int, dict]] = []
        for state in sorted(states, key=lambda s: s.partition):
            for name in sorted(state.autopause):
                value = state.autopause[name]
                outbox = (
                    value.outbox
                    if isinstance(value, Campaign)
                    else (value.get("outbox") if isinstance(value, dict) else None)
                )
                if outbox:
                    state.autopause[name] = records.campaign_of(value, now_ms)
                    out.extend((state.partition, d) for d in outbox)
        return out

    def _changed_records(self, states: list[PartitionState], now_ms: int | None) -> list[Record]:
        """Records of the campaigns changed since they were last written (and, with ``now_ms``,
        deletions of retired campaigns with nothing in effect)."""
        out: list[Record] = []
        for state in states:
            p = state.partition
            if now_ms is not None:
                for name in [n for n in state.autopause if n not in state.campaigns]:
                    value = records.campaign_of(state.autopause[name], now_ms)
                    if _idle(value, now_ms):
                        del state.autopause[name]
                        self._dirty.discard((p, name))
                        out.append(records.record(p, name, None))
            for key in sorted(k for k in self._dirty if k[0] == p):
                self._dirty.discard(key)
                held = state.autopause.get(key[1])
                if isinstance(held, Campaign):
                    out.append(records.record(p, key[1], held))
        return out

    def _counts(self, states: list[PartitionState], now_ms: int) -> dict[tuple[str, str], int]:
        counts = {(r.name, s): 0 for r in self.rules for s in STATES}
        for state in states:
            for value in state.autopause.values():
                if not isinstance(value, Campaign):
                    continue
                for rule_name, track in value.tracks.items():
                    if (rule_name, "paused") not in counts:
                        continue
                    if track.phase == PAUSED:
                        counts[(rule_name, "paused")] += 1
                    elif track.phase == HELD:
                        counts[(rule_name, "held")] += 1
                    elif track.phase == NOTIFIED:
                        counts[(rule_name, "notified")] += 1
                    elif track.breach_since is not None:
                        counts[(rule_name, "pending")] += 1
                    if track.flag in ("unknown", "suppressed"):
                        counts[(rule_name, track.flag)] += 1
        return counts


def _track_names(value: object) -> Iterable[str]:
    """The rules a restored (plain JSON) entry has tracks for, without making it live."""
    tracks = value.get("tracks") if isinstance(value, dict) else None
    return tracks.keys() if isinstance(tracks, dict) else ()


def _idle(campaign: Campaign, now_ms: int) -> bool:
    return not campaign.outbox and all(
        t.phase == RUNNING
        and t.flag is None
        and t.breach_since is None
        and not any(now_ms - p < DAY_MS for p in t.pauses)
        for t in campaign.tracks.values()
    )


def _main_channel(row: CampaignRow) -> str | None:
    """The channel with most of the campaign's events (all time), for the per-channel breaker."""
    if not row.by_channel:
        return None
    return max(sorted(row.by_channel), key=lambda channel: sum(row.by_channel[channel]))
