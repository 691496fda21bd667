"""The decision engine and the reference pauser together, as a state machine over random
sequences: breaches that start and clear, rules files that change (a rule added, removed,
renamed, its action switched), trust lost and regained, the breaker and the kill switch, humans
pausing, resuming and undoing, an operator releasing a hold, and the clock crossing midnights in
odd zones (Berlin's DST, Kolkata's +05:30, Kathmandu's +05:45, Lord Howe's 30-minute DST).

The engine is driven as the runner drives it: ``settle_orphans`` for the tracks of rules that no
longer judge the campaign, then ``advance`` for the rules that do, with the campaign's day edges from
``stream.horizons``. The pauser is ``policy.judge`` over a real ledger (SQLite in memory), acting
on a platform that remembers who paused the campaign.

Promises checked after every step:
- every ``rest_of_day`` pause carries the first local midnight strictly after it, and its resume
  is issued once, at the first round at or after that midnight (whatever the rules file says by
  then); a pause the pauser acted on is then undone by the pauser, unless a human acted or
  another rule's pause of ours still holds the campaign;
- the pauser never resumes a campaign that its ledger does not show paused by it (for that rule);
- no track stays held past its day;
- a notify uses no pause cycle and never becomes a hold.

Mutations this catches (each tried by hand, each failed the test): a hold without an end
(``until_ms=None`` for holds); a notify counted as a pause cycle; the runner stepping only the
current rules (``settle_orphans`` not called); the pauser acting on every resume (``_not_ours``
returning None); day edges snapped to the hour grid (the old ``horizons``) in Kolkata.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from autopause import engine
from autopause.engine import (
    HELD,
    HOLD,
    NOTIFY,
    PAUSE,
    RESUME,
    Campaign,
    Input,
    Scopes,
    Trust,
)
from autopause.evaluate import Evaluation
from autopause.ledger import Ledger
from autopause.policy import ACT, DECLINE, WAIT, Limits, judge
from rulebook.rules import Rule, parse_rules
from stream.horizons import horizons

ZONES = (
    "UTC",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
)
START = int(datetime(2026, 3, 27, 20, 0, tzinfo=UTC).timestamp() * 1000)  # Berlin DST: 29 Mar
LONG_BUCKET_MS = 900_000  # 15 minutes: fits every zone above
TTL_MS = 10 * 60_000
CAMPAIGN = "c1"
BASE = {"summary": "s", "severity": "page", "kpi": "ctr", "window": "15m", "op": "<"}
SPECS = {
    # name -> rule body: two rest-of-day rules, a pause a human resumes, a notify
    "stop_loss": {"threshold": 0.01, "for": "10m", "pause_for": "rest_of_day"},
    "burn": {"threshold": 0.02, "for": "5m", "pause_for": "rest_of_day", "max_cycles_per_day": 1},
    "collapse": {"threshold": 0.005, "for": "5m", "max_cycles_per_day": 1},
    "watch": {"threshold": 0.03, "for": "5m", "action": "notify"},
}


def make_rule(name: str, spec: dict) -> Rule:
    body = {**BASE, "name": name, **spec}
    if body.get("action") != "notify":
        body["may_pause"] = True
    (parsed,) = parse_rules({"rules": [body]})
    return parsed


def first_midnight_after(ms: int, zone: str) -> int:
    """Independent of the code under test: the local calendar's next day, at 00:00."""
    tz = ZoneInfo(zone)
    day = datetime.fromtimestamp(ms / 1000, tz).date()
    while True:
        day += timedelta(days=1)
        instant = int(datetime.combine(day, time(0), tzinfo=tz).timestamp() * 1000)
        if instant > ms:
            return instant


class Promises(RuleBasedStateMachine):
    @initialize(zone=st.sampled_from(ZONES), offset_minutes=st.integers(0, 3 * 24 * 60))
    def start(self, zone: str, offset_minutes: int) -> None:
        self.zone = zone
        self.now = START + offset_minutes * 60_000
        self.rules: dict[str, Rule] = {name: make_rule(name, spec) for name, spec in SPECS.items()}
        self.breaching: dict[str, bool] = {}  # by rule name (kept across renames by spec name)
        self.campaign = Campaign(self.now - 86_400_000)
        self.trusted = True
        self.breaker_open = False
        self.kill_switch = False
        self.ledger = Ledger(":memory:")
        self.platform_paused = False
        self.paused_by: str | None = None  # "pauser" | "human"
        self.queue: list[dict] = []  # decisions the pauser holds (kill switch)
        self.human_acted_since: int | None = None
        # (rule, resume_at) of rest-of-day pauses issued, and of their resumes issued
        self.promised: dict[tuple[str, int], int] = {}  # -> the pause's issue time
        self.resumed: dict[tuple[str, int], int] = {}  # -> resumes issued for it
        self.seq = 0
        self.pause_acted: dict[str, int] = {}  # rule -> when the pauser last acted on its pause

    # -- the world -------------------------------------------------------------------------------

    @rule(name=st.sampled_from(sorted(SPECS)), holds=st.booleans())
    def breach(self, name: str, holds: bool) -> None:
        self.breaching[name] = holds

    @rule(name=st.sampled_from(sorted(SPECS)))
    def flap(self, name: str) -> None:
        """A campaign that collapses, recovers and collapses again within minutes."""
        for holds in (True, True, False, False, True, True):
            self.breaching[name] = holds
            self.now += 6 * 60_000
            self.round()

    @rule(minutes=st.sampled_from([1, 4, 6, 11, 45, 180, 600, 1440]))
    def clock(self, minutes: int) -> None:
        self.now += minutes * 60_000
        self.round()

    @rule()
    def round_now(self) -> None:
        self.round()

    @rule(trusted=st.booleans())
    def trust(self, trusted: bool) -> None:
        self.trusted = trusted

    @rule(opened=st.booleans())
    def breaker(self, opened: bool) -> None:
        self.breaker_open = opened

    @rule(present=st.booleans())
    def kill(self, present: bool) -> None:
        self.kill_switch = present
        if present:
            self.human_acted_since = self.now

    # -- rules files -----------------------------------------------------------------------------

    @rule(name=st.sampled_from(sorted(SPECS)))
    def remove_rule(self, name: str) -> None:
        for current in [n for n, r in self.rules.items() if n == name or n == f"{name}_v2"]:
            del self.rules[current]

    @rule(name=st.sampled_from(sorted(SPECS)))
    def add_rule(self, name: str) -> None:
        self.rules.setdefault(name, make_rule(name, SPECS[name]))

    @rule(name=st.sampled_from(sorted(SPECS)))
    def rename_rule(self, name: str) -> None:
        if name in self.rules:
            del self.rules[name]
            self.rules[f"{name}_v2"] = make_rule(f"{name}_v2", SPECS[name])

    @rule(name=st.sampled_from(sorted(SPECS)), notify=st.booleans())
    def switch_action(self, name: str, notify: bool) -> None:
        if name in self.rules:
            spec = dict(SPECS[name])
            if notify:
                spec["action"] = "notify"
                spec.pop("pause_for", None)
            else:
                spec.pop("action", None)
            self.rules[name] = make_rule(name, spec)

    # -- humans ----------------------------------------------------------------------------------

    @rule()
    def human_pauses(self) -> None:
        if not self.platform_paused:
            self.platform_paused, self.paused_by = True, "human"
        self.human_acted_since = self.now

    @rule()
    def human_resumes(self) -> None:
        self.platform_paused, self.paused_by = False, None
        self.human_acted_since = self.now

    @rule()
    def human_undoes_the_last_pause(self) -> None:
        """``kpi-monitor pauser undo`` of the latest pause the pauser made."""
        rows = self.ledger.db.execute(
            "SELECT decision_id FROM entries WHERE verdict = 'pause' AND outcome = 'done' "
            "ORDER BY acted_at_ms DESC LIMIT 1"
        ).fetchall()
        if not rows:
            return
        entry = self.ledger.get(rows[0][0])
        assert entry is not None
        self.ledger.record(
            entry.decision, self.now, "undone", "by undo", action="resume", acted_at_ms=self.now
        )
        self.platform_paused, self.paused_by = False, None
        self.human_acted_since = self.now

    @precondition(lambda self: any(t.phase == HELD for t in self.campaign.tracks.values()))
    @rule()
    def operator_releases_holds(self) -> None:
        for name, track in list(self.campaign.tracks.items()):
            if track.phase == HELD:
                self.campaign.tracks[name] = engine.release(track)

    # -- one decision round, then the pauser ------------------------------------------------------

    def round(self) -> None:
        spans = horizons(self.now, self.zone, LONG_BUCKET_MS)
        assert spans.day_end_ms == first_midnight_after(self.now, self.zone)
        rules = list(self.rules.values())
        evaluations = {
            r.name: Evaluation(
                self.breaching.get(r.name.removesuffix("_v2"), False), 0.001, None, None
            )
            for r in rules
        }
        data = Input(
            evaluations,
            dict.fromkeys(evaluations),
            {r.name: Trust(self.trusted, "" if self.trusted else "lagging") for r in rules},
            None,
            spans.day_end_ms,
            spans.day_start_ms,
        )
        scopes = Scopes({r.name: self.breaker_open for r in rules}, {r.name: set() for r in rules})
        before = dict(self.campaign.tracks)
        # As the runner: the tracks no rule steps first (their seqs below the round's others),
        # then every rule; published in that order.
        orphans, _ = engine.settle_orphans(CAMPAIGN, self.campaign, evaluations, self.now)
        issued, _ = engine.advance(rules, CAMPAIGN, self.campaign, data, self.now, scopes)
        seqs = [d.seq for d in orphans + issued]
        assert seqs == sorted(seqs), "published out of seq order"
        for decision in orphans + issued:
            self.check_issued(decision, before)
            self.queue.append(self.published(decision))
        self.pauser()

    def check_issued(self, decision, before) -> None:
        previous = before.get(decision.rule)
        if decision.verdict == PAUSE and decision.until_ms is not None:
            assert decision.until_ms == first_midnight_after(self.now, self.zone)
            self.promised[(decision.rule, decision.until_ms)] = self.now
        if decision.verdict == RESUME and previous is not None and previous.until_ms is not None:
            key = (decision.rule, previous.until_ms)
            assert key in self.promised, "a resume at midnight of a pause never issued"
            assert self.now >= previous.until_ms, "resumed before its midnight"
            self.resumed[key] = self.resumed.get(key, 0) + 1
        if decision.verdict == NOTIFY:
            track = self.campaign.tracks[decision.rule]
            used = len(previous.pauses) if previous is not None else 0
            assert len(track.pauses) <= used, "a notify used a pause cycle"
        if decision.verdict == HOLD:
            rule = self.rules.get(decision.rule)
            assert rule is not None and rule.action != NOTIFY, "a notify rule held"

    def published(self, decision) -> dict:
        self.seq += 1
        return {
            "decision_id": f"d{self.seq}",
            "campaign_id": decision.campaign,
            "rule": decision.rule,
            "verdict": decision.verdict,
            "seq": decision.seq,
            "issued_at_ms": decision.issued_at_ms,
            "valid_until_ms": decision.issued_at_ms + TTL_MS,
            "resume_at_ms": decision.until_ms,
        }

    def pauser(self) -> None:
        limits = Limits(mode="live", max_pauses_per_hour=1000, max_share=1.0, min_campaigns=10**6)
        waiting = []
        for decision in self.queue:
            known = self.ledger.known(decision, self.now)
            action = judge(decision, self.now, known, limits, kill_switch=self.kill_switch)
            event(f"{decision['verdict']} -> {action.kind}")
            paused_at = self.pause_acted.get(decision["rule"])
            if (
                decision["verdict"] == RESUME
                and paused_at is not None
                and (self.human_acted_since is None or self.human_acted_since < paused_at)
                and known.pausing == {decision["rule"]}
            ):  # our pause, nobody else's since, no other rule of ours holding it
                assert action.kind == ACT, f"the pauser did not resume its own pause: {action}"
            if action.kind == WAIT:
                waiting.append(decision)
                continue
            if action.kind == ACT:
                if decision["verdict"] == RESUME:
                    # The ledger must show the campaign paused by this pauser for this rule and
                    # no other (what a human did on the platform itself it cannot know).
                    assert known.pausing == {decision["rule"]}, "resumed what it did not pause"
                    untouched = self.human_acted_since is None or (
                        paused_at is not None and self.human_acted_since < paused_at
                    )
                    assert not untouched or self.paused_by == "pauser"
                self.act(decision)
                continue
            outcome = {DECLINE: "skipped"}.get(action.kind, action.kind)
            if action.kind != "skip":
                self.ledger.record(decision, self.now, outcome, action.reason)
        self.queue = waiting

    def act(self, decision: dict) -> None:
        verdict = decision["verdict"]
        changes = self.platform_paused != (verdict == PAUSE)
        if changes:
            self.platform_paused = verdict == PAUSE
            self.paused_by = "pauser" if verdict == PAUSE else None
        if verdict == PAUSE:
            self.pause_acted[decision["rule"]] = self.now
        else:
            self.pause_acted.clear()
        self.ledger.record(
            decision,
            self.now,
            "done" if changes else "already",
            action=verdict,
            acted_at_ms=self.now,
        )

    # -- promises --------------------------------------------------------------------------------

    @invariant()
    def no_track_held_past_its_day(self) -> None:
        if not hasattr(self, "campaign"):
            return
        for track in self.campaign.tracks.values():
            if track.phase == HELD:
                assert track.until_ms is not None, "a hold with no end"
                assert track.until_ms <= first_midnight_after(track.last_action_ms or 0, self.zone)

    @invariant()
    def each_midnight_resume_is_issued_once_and_on_time(self) -> None:
        if not hasattr(self, "campaign"):
            return
        for key, paused_at in self.promised.items():
            issued = self.resumed.get(key, 0)
            assert issued <= 1, f"{key} resumed {issued} times"
            # A round runs at each step of the clock: once it is past the midnight, the resume
            # is out, whatever became of the rule meanwhile.
            if self.now >= key[1]:
                assert issued == 1, f"the pause of {key[0]} at {paused_at} was not resumed"


TestPromises = Promises.TestCase
TestPromises.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
