"""Pause / resume decisions per campaign and rule, made safe. Pure: state in, state out, the
clock passed in.

Per (campaign, rule) a ``Track`` goes through these phases:

- ``running``: the rule's condition (``autopause.evaluate``) must hold on trusted data for the
  rule's ``for`` before a ``pause`` is issued, and not within ``cooldown`` of the last action nor
  while the campaign is younger than ``min_campaign_age``. A pause beyond ``max_cycles_per_day`` in
  the campaign's local day is issued as ``hold`` instead: the campaign flaps, a human decides.
- ``paused``: with ``resume_threshold`` set, the opposite condition (the KPI past
  ``resume_threshold`` on the good side, with the rule's confidence and volume) must hold for
  ``resume_for`` (and the cooldown pass) before a ``resume`` is issued. Without it a human
  resumes; the rule re-arms silently once its condition has been false for its ``for`` (a paused
  campaign's windows drain), so a campaign resumed by hand that collapses again is paused again.
- ``held``: nothing more is issued for the rule until the campaign's next midnight, or until an
  operator releases it (``release``); the new day counts its cycles afresh.
- ``notified``: a rule with ``action: notify`` told once; it uses no pause cycle, is never held,
  and re-arms once its condition has been false for its ``for``.

A rule with ``pause_for: rest_of_day`` resumes by the clock: its pause carries the campaign's next
midnight (its time zone), and the ``resume`` is issued then, trusted data or not. A rule with
``action: notify`` issues ``notify`` where it would pause: the same timers and breaker, nothing
acted on.

A promise outlives its rule: a track whose rule left the rules file (or stopped deciding, or
selecting the campaign) is still resumed at its midnight (``orphan_step``).

Data that cannot be trusted (``Trust``: partition lagging, event time not advancing, too many
late events) stops every timer: **unknown never pauses**; an ``unknown`` is issued once when it
interrupts a pending pause or a paused campaign's resume.

The **breaker**: when more than ``share`` of a rule's active campaigns (and at least
``min_campaigns``), over all campaigns or over one channel's (by each campaign's main channel),
are in breach of it, or were paused by it within ``window``, it is the tracking that broke, not
the campaigns:
would-be pauses are issued once as ``suppressed`` and nothing is paused until the share falls.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from rulebook.rules import Rule

from .evaluate import NO_EVIDENCE, Evaluation

PAUSE, RESUME, UNKNOWN, HOLD, SUPPRESSED = "pause", "resume", "unknown", "hold", "suppressed"
NOTIFY = "notify"  # a rule with ``action: notify``: recorded and reported, nothing acted on
VERDICTS = (PAUSE, RESUME, UNKNOWN, HOLD, SUPPRESSED, NOTIFY)
RUNNING, PAUSED, HELD = "running", "paused", "held"
NOTIFIED = "notified"  # a notify rule told once; re-armed once its condition has cleared
ALL_CAMPAIGNS = "*"  # the breaker scope over every campaign (the others are channels)
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Track:
    """One campaign under one rule. Persisted: a worker taking the partition over continues it."""

    phase: str = RUNNING
    breach_since: int | None = None  # ms: the pause condition has held on trusted data since
    clear_since: int | None = None  # ms, paused: the resume (or re-arm) condition has held since
    last_action_ms: int | None = None  # the last pause / resume / hold issued
    pauses: tuple[int, ...] = ()  # pauses and holds issued in the last 24 h
    flag: str | None = None  # UNKNOWN or SUPPRESSED once issued, until the episode ends
    # Paused for the rest of the day: resumed at this midnight. Held: released at this midnight.
    until_ms: int | None = None


class Trust(NamedTuple):
    trusted: bool
    reason: str = ""  # why not: "lagging", "event time stalled", "late share"


TRUSTED = Trust(True)


@dataclass(frozen=True)
class Breaker:
    share: float = 0.2  # of the rule's active campaigns tripping within the window
    min_campaigns: int = 5  # never opens for fewer than this many
    window_ms: int = 600_000


class Step(NamedTuple):
    track: Track
    verdict: str | None  # issued now, or None


def _age_ok(rule: Rule, first_seen_ms: int, now_ms: int) -> bool:
    return now_ms - first_seen_ms >= rule.seconds("min_campaign_age") * 1000


def step(
    rule: Rule,
    track: Track,
    now_ms: int,
    evaluation: Evaluation,
    resume: Evaluation | None,
    trust: Trust,
    first_seen_ms: int,
    breaker_open: bool = False,
    day_end_ms: int | None = None,
    day_start_ms: int | None = None,
) -> Step:
    """One evaluation of ``rule`` for one campaign. ``resume`` is the resume condition's
    evaluation (None without ``resume_threshold``); ``day_start_ms`` and ``day_end_ms`` the
    campaign's last and next midnight in its time zone (``pause_for: rest_of_day`` resumes at
    the next; a hold lasts until it; ``max_cycles_per_day`` counts from the last)."""
    if rule.action == NOTIFY and track.phase == PAUSED and track.until_ms is None:
        track = replace(track, phase=NOTIFIED)  # written before notifies had a phase of their own
    if track.phase == HELD and track.until_ms is None:  # written before holds ended
        if rule.action == NOTIFY:
            track = release(track)  # a notify is never held
        else:
            end = day_end_ms if day_end_ms is not None and day_end_ms > now_ms else None
            track = replace(track, until_ms=end if end is not None else now_ms + DAY_MS)
    if track.phase == HELD:
        # A hold lasts the rest of the campaign's day (or until an operator releases it): the
        # next day starts with a fresh count of cycles.
        if track.until_ms is None or now_ms < track.until_ms:
            return Step(track, None)
        track = release(track)
    if track.phase == PAUSED and track.until_ms is not None:
        # Paused for the rest of the day: the clock ends it, whatever the data says.
        if now_ms < track.until_ms:
            return Step(track, None)
        return Step(_resumed_by_clock(track, now_ms), RESUME)
    for_ms = rule.for_seconds * 1000
    if not trust.trusted:
        resuming = track.phase == PAUSED and track.clear_since is not None and resume is not None
        pending = track.breach_since is not None or resuming
        issue = UNKNOWN if pending and track.flag != UNKNOWN else None
        new = replace(
            track,
            breach_since=None,
            clear_since=None,
            flag=UNKNOWN if pending or track.flag == UNKNOWN else track.flag,
        )
        return Step(new, issue)
    if track.flag == UNKNOWN:
        track = replace(track, flag=None)
    cooled = (
        track.last_action_ms is None
        or now_ms - track.last_action_ms >= rule.seconds("cooldown") * 1000
    )
    if track.phase == PAUSED:
        return _paused(rule, track, now_ms, evaluation, resume, for_ms, cooled)
    if track.phase == NOTIFIED:
        return _rearm(track, now_ms, evaluation, for_ms)

    if not evaluation.holds or not _age_ok(rule, first_seen_ms, now_ms):
        return Step(
            replace(
                track, breach_since=None, flag=None if track.flag == SUPPRESSED else track.flag
            ),
            None,
        )
    since = track.breach_since if track.breach_since is not None else now_ms
    track = replace(track, breach_since=since)
    if now_ms - since < for_ms or not cooled:
        return Step(track, None)
    if breaker_open:
        if track.flag == SUPPRESSED:
            return Step(track, None)
        return Step(replace(track, flag=SUPPRESSED), SUPPRESSED)
    if rule.action == NOTIFY:  # told, nothing acted on: no pause cycle used, never held
        notified = replace(
            track,
            phase=NOTIFIED,
            last_action_ms=now_ms,
            breach_since=None,
            clear_since=None,
            flag=None,
            until_ms=None,
        )
        return Step(notified, NOTIFY)
    # Cycles are counted over the campaign's local day (the last 24 h where its day is not
    # known); the tuple keeps 24 h of pauses for the breaker's window.
    recent = tuple(t for t in track.pauses if now_ms - t < DAY_MS)
    day_start = day_start_ms if day_start_ms is not None else now_ms - DAY_MS
    cycles = sum(t >= day_start for t in recent)
    # A pause beyond the day's cycles goes to a human instead: counted the same, held until the
    # campaign's next midnight.
    held = cycles >= rule.max_cycles_per_day
    midnight = day_end_ms if day_end_ms is not None and day_end_ms > now_ms else None
    if rule.pause_for == "rest_of_day" and not held and midnight is None:
        # A pause for the rest of the day needs the day's end: without it no pause is issued
        # (one would never be resumed by the clock). The breach stays pending.
        return Step(track, None)
    until: int | None
    if held:  # without the campaign's midnight, a day from now: no hold lasts for ever
        until = midnight if midnight is not None else now_ms + DAY_MS
    else:
        until = midnight if rule.pause_for == "rest_of_day" else None
    new = replace(
        track,
        phase=HELD if held else PAUSED,
        pauses=(*recent, now_ms),
        last_action_ms=now_ms,
        breach_since=None,
        clear_since=None,
        flag=None,
        until_ms=until,
    )
    return Step(new, HOLD if held else PAUSE)


def _resumed_by_clock(track: Track, now_ms: int) -> Track:
    return replace(
        track,
        phase=RUNNING,
        until_ms=None,
        breach_since=None,
        clear_since=None,
        last_action_ms=now_ms,
        flag=None,
    )


def _paused(
    rule: Rule,
    track: Track,
    now_ms: int,
    evaluation: Evaluation,
    resume: Evaluation | None,
    for_ms: float,
    cooled: bool,
) -> Step:
    if resume is not None:  # auto-resume: only the resume condition ends the pause
        if not resume.holds:
            return Step(replace(track, clear_since=None), None)
        since = track.clear_since if track.clear_since is not None else now_ms
        resume_for_ms = (rule.seconds("resume_for") * 1000) or for_ms
        if now_ms - since < resume_for_ms or not cooled:
            return Step(replace(track, clear_since=since), None)
        return Step(
            replace(
                track,
                phase=RUNNING,
                clear_since=None,
                breach_since=None,
                last_action_ms=now_ms,
            ),
            RESUME,
        )
    # A human resumes; re-arm once the condition has been false a while.
    return _rearm(track, now_ms, evaluation, for_ms)


def _rearm(track: Track, now_ms: int, evaluation: Evaluation, for_ms: float) -> Step:
    """Back to running, silently, once the condition has been false for the rule's ``for``: a
    campaign resumed by hand that collapses again is paused again; a notify rule tells again."""
    if evaluation.holds:
        return Step(replace(track, clear_since=None), None)
    since = track.clear_since if track.clear_since is not None else now_ms
    if now_ms - since < for_ms:
        return Step(replace(track, clear_since=since), None)
    return Step(replace(track, phase=RUNNING, clear_since=None, breach_since=None), None)


def release(track: Track) -> Track:
    """A held campaign taken back (by an operator, or by the clock at the campaign's next
    midnight): the rule starts afresh. Its pauses are kept for the breaker's window; the count
    of the day's cycles starts again with the day."""
    return replace(
        track, phase=RUNNING, breach_since=None, clear_since=None, flag=None, until_ms=None
    )


clear = release  # the name of earlier releases


def orphan_step(track: Track, now_ms: int) -> Step | None:
    """A track whose rule no longer judges the campaign (removed from the rules file, renamed,
    its ``may_pause`` switched off, or no longer selecting it): what becomes of it, or None to
    keep it as it is. A promise made stays kept: a pause for the rest of the day is resumed at
    its midnight (then the track goes), a hold is released at its midnight. Anything else
    (nothing in effect, or a pause that waits for a human or for a resume condition nobody can
    judge now) goes: the campaign stays as it is, for a human."""
    if track.phase == PAUSED and track.until_ms is not None:
        if now_ms < track.until_ms:
            return None
        return Step(_resumed_by_clock(track, now_ms), RESUME)
    if track.phase == HELD and track.until_ms is not None and now_ms < track.until_ms:
        return None
    return Step(IDLE_TRACK, None)


def breaker_open(tripped: int, active: int, breaker: Breaker) -> bool:
    return tripped >= breaker.min_campaigns and tripped > breaker.share * active


@dataclass
class Campaign:
    """Everything the engine keeps for one campaign (persisted with its partition)."""

    first_seen_ms: int
    seq: int = 0  # the seq of the campaign's latest decision, all rules together (0: none yet)
    tracks: dict[str, Track] = field(default_factory=dict)
    outbox: list[dict] = field(default_factory=list)  # issued, not yet sent (autopause.records)


def next_seq(previous: int, now_ms: int) -> int:
    """The seq of a campaign's next decision: above its previous one, and at least the issue
    time in ms. A campaign's record is deleted once it is retired and idle, and a pauser drops
    any seq at or below one it handled; the clock keeps a campaign that comes back above all
    of its earlier seqs (as long as the workers' clocks do not run back by the time since its
    last decision, which is at least the KPI retention when a record was retired). An int below
    2**53: exact in any JSON reader."""
    return max(previous + 1, now_ms)


class Decision(NamedTuple):
    campaign: str
    rule: str
    verdict: str
    seq: int
    issued_at_ms: int
    evidence: Evaluation
    until_ms: int | None = None  # a pause for the rest of the day: the resume is due then


class Input(NamedTuple):
    """One campaign's evaluations at one tick, by rule name."""

    evaluations: Mapping[str, Evaluation]
    resumes: Mapping[str, Evaluation | None]
    trust: Mapping[str, Trust]  # by rule: the trust of the data the rule reads
    channel: str | None = None  # the campaign's main channel: the breaker also counts per channel
    day_end_ms: int | None = None  # the campaign's next midnight, in its time zone
    day_start_ms: int | None = None  # and its last


_IDLE = Track()
IDLE = IDLE_TRACK = _IDLE  # a track under a rule it is not in: nothing pending or in effect


def tripped(
    track: Track, evaluation: Evaluation, trust: Trust, now_ms: int, breaker: Breaker
) -> bool:
    """Counts towards the rule's breaker after this evaluation: in breach now (pending counts:
    a flood shows before anyone's ``for`` has run out), or paused by the rule within the
    breaker window."""
    if trust.trusted and evaluation.holds:
        return True
    return any(now_ms - t < breaker.window_ms for t in track.pauses)


def _active(evaluation: Evaluation) -> bool:
    """Counts in the breaker's population: the rule has a value to judge the campaign by (any
    condition of a compound rule: an ``any:`` rule holding on its second condition while its
    first has no value is tripped, so it must be active too)."""
    return (
        evaluation.holds
        or evaluation.value is not None
        or any(part.value is not None for part in evaluation.parts)
    )


class Scopes(NamedTuple):
    """Per rule, where its breaker is open."""

    everywhere: dict[str, bool]  # rule -> open over all campaigns
    channels: dict[str, set[str]]  # rule -> channels whose breaker is open

    def suppresses(self, rule: str, channel: str | None) -> bool:
        return self.everywhere[rule] or channel in self.channels[rule]

    def open(self, rule: str) -> frozenset[str]:
        """``ALL_CAMPAIGNS`` and / or channel names."""
        return frozenset(
            ({ALL_CAMPAIGNS} if self.everywhere[rule] else set()) | self.channels[rule]
        )


def breaker_scopes(
    rules: list[Rule],
    campaigns: Mapping[str, Campaign],
    inputs: Mapping[str, Input],
    now_ms: int,
    breaker: Breaker,
) -> Scopes:
    """The breakers, counting the campaigns as they stand after this evaluation and before any
    act: over all of them, and over each channel's (a broken tag often breaks one channel)."""
    everywhere: dict[str, bool] = {}
    channels: dict[str, set[str]] = {}
    for rule in rules:
        counts: dict[str | None, list[int]] = {}  # channel (None: all) -> [tripped, active]
        name_of_rule = rule.name
        for name, data in inputs.items():
            evaluation = data.evaluations.get(name_of_rule)
            if evaluation is None:
                continue
            campaign = campaigns.get(name)
            track = campaign.tracks.get(name_of_rule, _IDLE) if campaign else _IDLE
            trips = tripped(
                track, evaluation, data.trust.get(name_of_rule, TRUSTED), now_ms, breaker
            )
            active = _active(evaluation)
            for scope in (None, data.channel) if data.channel is not None else (None,):
                tally = counts.get(scope)
                if tally is None:
                    tally = counts[scope] = [0, 0]
                tally[0] += trips
                tally[1] += active
        opened = {
            scope for scope, (n, active) in counts.items() if breaker_open(n, active, breaker)
        }
        everywhere[name_of_rule] = None in opened
        channels[name_of_rule] = {scope for scope in opened if scope is not None}
    return Scopes(everywhere, channels)


def advance(
    rules: list[Rule], name: str, campaign: Campaign, data: Input, now_ms: int, scopes: Scopes
) -> tuple[list[Decision], bool]:
    """One campaign under every rule it is evaluated on: the decisions, and whether its state
    changed."""
    decisions = []
    changed = False
    for rule in rules:
        evaluation = data.evaluations.get(rule.name)
        if evaluation is None:
            continue
        track = campaign.tracks.get(rule.name, _IDLE)
        trust = data.trust.get(rule.name, TRUSTED)
        if (track is _IDLE or track == _IDLE) and not (evaluation.holds and trust.trusted):
            continue  # nothing pending, nothing in effect, nothing to start: left as it is
        new, verdict = step(
            rule,
            track,
            now_ms,
            evaluation,
            data.resumes.get(rule.name),
            trust,
            campaign.first_seen_ms,
            scopes.suppresses(rule.name, data.channel),
            data.day_end_ms,
            data.day_start_ms,
        )
        if new != track:
            campaign.tracks[rule.name] = new
            changed = True
        if verdict is not None:
            campaign.seq = next_seq(campaign.seq, now_ms)
            until = new.until_ms if verdict == PAUSE else None
            decisions.append(
                Decision(name, rule.name, verdict, campaign.seq, now_ms, evaluation, until)
            )
    return decisions, changed


def settle_orphans(
    name: str, campaign: Campaign, stepped: Container[str], now_ms: int
) -> tuple[list[Decision], bool]:
    """``orphan_step`` for each of the campaign's tracks whose rule was not stepped this round:
    the decisions issued (resumes at midnight), and whether its state changed."""
    decisions = []
    changed = False
    for rule_name in [r for r in campaign.tracks if r not in stepped]:
        outcome = orphan_step(campaign.tracks[rule_name], now_ms)
        if outcome is None:
            continue
        changed = True
        if outcome.track == IDLE_TRACK:
            del campaign.tracks[rule_name]
        else:
            campaign.tracks[rule_name] = outcome.track
        if outcome.verdict is not None:
            campaign.seq = next_seq(campaign.seq, now_ms)
            decisions.append(
                Decision(name, rule_name, outcome.verdict, campaign.seq, now_ms, NO_EVIDENCE)
            )
    return decisions, changed


def tick(
    rules: Iterable[Rule],
    campaigns: dict[str, Campaign],
    inputs: Mapping[str, Input],
    now_ms: int,
    breaker: Breaker,
) -> tuple[list[Decision], dict[str, frozenset[str]]]:
    """Advance every campaign of ``inputs`` (adding new ones to ``campaigns``) under every rule;
    the decisions issued, in (campaign, rule) order, and per rule the scopes whose breaker is
    open (``ALL_CAMPAIGNS``, or channel names)."""
    rules = list(rules)
    for name in inputs:
        if name not in campaigns:
            campaigns[name] = Campaign(now_ms)
    scopes = breaker_scopes(rules, campaigns, inputs, now_ms, breaker)
    decisions = []
    for name in sorted(inputs):
        decisions += advance(rules, name, campaigns[name], inputs[name], now_ms, scopes)[0]
    return decisions, {rule.name: scopes.open(rule.name) for rule in rules}
