"""The decision engine, table-driven over timelines: one evaluation a minute."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autopause.engine import (
    HELD,
    HOLD,
    PAUSE,
    PAUSED,
    RESUME,
    RUNNING,
    SUPPRESSED,
    TRUSTED,
    UNKNOWN,
    Breaker,
    Campaign,
    Input,
    Track,
    Trust,
    clear,
    next_seq,
    step,
    tick,
)
from autopause.evaluate import Evaluation
from tests.autopause.cases import rule

MIN = 60_000
DAY = 86_400_000
BAD = Evaluation(True, 0.001, 0.004, 3000)  # the pause condition holds
GOOD = Evaluation(False, 0.02, 0.03, 3000)
QUIET = Evaluation(False, None, None, 0)  # no traffic: no value, no volume
LAGGING = Trust(False, "lagging")


def ctr_rule(**fields):
    base = dict(
        kpi="ctr",
        window="15m",
        op="<",
        threshold=0.005,
        confident=True,
        **{"for": "5m"},
        cooldown="0s",
    )
    return rule(**{**base, **fields})


def run(r, timeline, *, resume=None, first_seen=0, breaker_open=False, track=None):
    """timeline: per minute an Evaluation, or (Evaluation, Trust). The verdicts by minute."""
    track = track or Track()
    issued = {}
    for minute, entry in enumerate(timeline):
        evaluation, trust = (entry, TRUSTED) if isinstance(entry, Evaluation) else entry
        resume_eval = resume[minute] if resume else None
        track, verdict = step(
            r, track, minute * MIN, evaluation, resume_eval, trust, first_seen, breaker_open
        )
        if verdict:
            issued[minute] = verdict
    return issued, track


@pytest.mark.parametrize(
    "name, fields, timeline, expected",
    [
        ("fires only after for", {}, [BAD] * 8, {5: PAUSE}),
        ("a gap restarts the for", {}, [BAD] * 4 + [GOOD] + [BAD] * 6, {10: PAUSE}),
        ("for 0 fires at once", {"for": "0s"}, [BAD], {0: PAUSE}),
        ("never below min volume or inside the bound (condition false)", {}, [GOOD] * 10, {}),
        (
            "unknown stops the clock and is issued once",
            {},
            [BAD] * 3 + [(BAD, LAGGING)] * 3 + [BAD] * 6,
            {3: UNKNOWN, 11: PAUSE},
        ),
        ("unknown is not issued with nothing pending", {}, [(GOOD, LAGGING)] * 3, {}),
        ("learning phase", {"min_campaign_age": "10m"}, [BAD] * 20, {15: PAUSE}),
    ],
)
def test_pause_timelines(name, fields, timeline, expected):
    issued, _ = run(ctr_rule(**fields), timeline)
    assert issued == expected


def test_unknown_never_pauses():
    issued, track = run(ctr_rule(), [(BAD, LAGGING)] * 60)
    assert PAUSE not in issued.values() and track.phase == RUNNING


def test_hysteresis_resume_needs_the_resume_condition_for_resume_for():
    r = ctr_rule(resume_threshold=0.01, resume_for="10m")
    resumed = Evaluation(True, 0.02, 0.015, 3000)  # lower bound above 1%
    not_yet = Evaluation(False, 0.008, 0.006, 3000)  # above the pause threshold, under resume
    timeline = [BAD] * 6 + [GOOD] * 30
    resume = [not_yet] * 6 + [not_yet] * 5 + [resumed] * 25
    issued, track = run(r, timeline, resume=resume)
    assert issued == {5: PAUSE, 21: RESUME}
    assert track.phase == RUNNING


def test_without_resume_threshold_a_human_resumes_and_the_rule_rearms():
    r = ctr_rule()
    # paused at 5; windows drain (QUIET) for 5 minutes: re-armed silently at 10; a human
    # resumes, CTR collapses again: paused again after the rule's for.
    issued, track = run(r, [BAD] * 6 + [QUIET] * 6 + [BAD] * 7)
    assert issued == {5: PAUSE, 17: PAUSE}
    assert track.phase == PAUSED and len(track.pauses) == 2


def test_paused_campaign_whose_condition_keeps_holding_is_not_paused_twice():
    issued, _ = run(ctr_rule(), [BAD] * 120)
    assert issued == {5: PAUSE}


def test_cooldown_between_actions():
    r = ctr_rule(cooldown="30m")
    issued, _ = run(r, [BAD] * 6 + [QUIET] * 6 + [BAD] * 30)
    assert issued == {5: PAUSE, 35: PAUSE}


def test_cycle_cap_puts_the_campaign_on_hold_for_a_human():
    r = ctr_rule(max_cycles_per_day=2)
    flap = [BAD] * 6 + [QUIET] * 6
    issued, track = run(r, flap * 4)
    assert list(issued.values()) == [PAUSE, PAUSE, HOLD]
    assert track.phase == HELD
    more, held = run(r, [BAD] * 30, track=track)
    assert more == {} and held.phase == HELD
    assert clear(held).phase == RUNNING


def test_the_cycle_cap_forgets_after_a_day():
    r = ctr_rule(max_cycles_per_day=1)
    track = Track(pauses=(0,))
    _, verdict = step(
        r, Track(phase=RUNNING, breach_since=0, pauses=(0,)), 23 * 60 * MIN, BAD, None, TRUSTED, 0
    )
    assert verdict == HOLD
    _, verdict = step(
        r, Track(phase=RUNNING, breach_since=0, pauses=(0,)), 25 * 60 * MIN, BAD, None, TRUSTED, 0
    )
    assert verdict == PAUSE and track.pauses == (0,)


def test_breaker_suppresses_once_and_pauses_nothing():
    issued, track = run(ctr_rule(), [BAD] * 20, breaker_open=True)
    assert issued == {5: SUPPRESSED} and track.phase == RUNNING


def _tick_all(r, bad, healthy, minutes, breaker):
    campaigns = {}
    issued = []
    for minute in range(minutes):
        inputs = {f"bad{i}": Input({r.name: BAD}, {}, {}) for i in range(bad)}
        inputs |= {f"ok{i}": Input({r.name: GOOD}, {}, {}) for i in range(healthy)}
        decisions, state = tick([r], campaigns, inputs, minute * MIN, breaker)
        issued += decisions
    return issued, state


def test_breaker_opens_when_too_many_campaigns_trip_together():
    r = ctr_rule()
    issued, state = _tick_all(r, bad=30, healthy=70, minutes=10, breaker=Breaker(share=0.2))
    assert state == {r.name: frozenset({"*"})}
    assert {d.verdict for d in issued} == {SUPPRESSED} and len(issued) == 30


def test_breaker_stays_closed_for_a_few_bad_campaigns():
    r = ctr_rule()
    issued, state = _tick_all(r, bad=3, healthy=97, minutes=10, breaker=Breaker(share=0.2))
    assert state == {r.name: frozenset()}
    assert [d.verdict for d in issued] == [PAUSE] * 3
    assert [d.seq for d in issued] == [5 * MIN] * 3  # per campaign: each its first, at issue time


def test_seq_increases_per_campaign_across_rules():
    a, b = ctr_rule(name="a"), ctr_rule(name="b")
    campaigns = {"c": Campaign(0)}
    seqs = []
    for minute in range(8):
        decisions, _ = tick(
            [a, b], campaigns, {"c": Input({"a": BAD, "b": BAD}, {}, {})}, minute * MIN, Breaker()
        )
        seqs += [(d.rule, d.seq) for d in decisions]
    assert seqs == [("a", 5 * MIN), ("b", 5 * MIN + 1)]  # one tick, two decisions: still distinct


def _pauses_of_one_bad_campaign(r, campaigns, start_ms, minutes=8):
    issued = []
    for minute in range(minutes):
        decisions, _ = tick(
            [r], campaigns, {"c": Input({r.name: BAD}, {}, {})}, start_ms + minute * MIN, Breaker()
        )
        issued += decisions
    return issued


def test_a_campaign_whose_state_was_dropped_starts_above_its_earlier_seqs():
    """Its record is deleted once retired and idle; the pauser drops any seq at or below one it
    handled, so the next decision must not start again at the bottom."""
    r = ctr_rule()
    before = _pauses_of_one_bad_campaign(r, {}, 0)
    after = _pauses_of_one_bad_campaign(r, {}, DAY)  # the same campaign afresh, a day later
    assert [d.verdict for d in before] == [d.verdict for d in after] == [PAUSE]
    assert after[0].seq > before[0].seq


@given(
    seq=st.integers(0, 2**52),
    now=st.integers(0, 2**52),
)
def test_next_seq_grows_and_never_falls_below_the_clock(seq, now):
    assert next_seq(seq, now) > seq and next_seq(seq, now) >= now


def test_a_new_owner_whose_clock_is_behind_still_issues_a_higher_seq():
    r = ctr_rule()
    restored = Campaign(0, seq=DAY)  # the old owner's clock was a day ahead
    issued = _pauses_of_one_bad_campaign(r, {"c": restored}, MIN)
    assert [(d.verdict, d.seq) for d in issued] == [(PAUSE, DAY + 1)]


# -- graduated actions: notify, pause for the rest of the day --------------------------------


def run_days(r, timeline, day_end_ms_of):
    """As ``run``, with the campaign's next midnight at each minute (its zone's)."""
    track = Track()
    issued = {}
    for minute, evaluation in enumerate(timeline):
        now = minute * MIN
        track, verdict = step(
            r, track, now, evaluation, None, TRUSTED, 0, False, day_end_ms_of(now)
        )
        if verdict:
            issued[minute] = verdict
    return issued, track


def test_notify_is_issued_where_a_pause_would_be_and_re_arms():
    from autopause.engine import NOTIFY

    r = ctr_rule(action="notify", may_pause=False)
    issued, _ = run(r, [BAD] * 7 + [GOOD] * 6 + [BAD] * 6)
    assert issued == {5: NOTIFY, 18: NOTIFY}


def test_a_rest_of_day_pause_resumes_at_the_campaigns_midnight_whatever_the_data():
    r = ctr_rule(may_pause=True, pause_for="rest_of_day")
    midnight = 30 * MIN  # the campaign's day ends half an hour in
    timeline = [BAD] * 40  # still bad at midnight: resumed anyway, judged afresh after it
    issued, track = run_days(r, timeline, lambda now: midnight if now < midnight else 2 * DAY)
    assert issued == {5: PAUSE, 30: RESUME, 36: PAUSE}
    assert track.phase == PAUSED and track.until_ms == 2 * DAY


def test_a_rest_of_day_pause_resumes_through_lagging_data():
    r = ctr_rule(may_pause=True, pause_for="rest_of_day")
    track = Track(phase=PAUSED, until_ms=10 * MIN, last_action_ms=0)
    track, verdict = step(r, track, 9 * MIN, BAD, None, LAGGING, 0, False, 10 * MIN)
    assert verdict is None
    track, verdict = step(r, track, 10 * MIN, BAD, None, LAGGING, 0, False, DAY)
    assert verdict == RESUME and track.phase == RUNNING and track.until_ms is None


@pytest.mark.parametrize(
    "zone, now_iso, midnight_iso",
    [
        # New York's spring-forward night (8 March 2026): the day is 23 hours long.
        ("America/New_York", "2026-03-08T20:00:00-04:00", "2026-03-09T00:00:00-04:00"),
        ("America/New_York", "2026-03-07T20:00:00-05:00", "2026-03-08T00:00:00-05:00"),
        ("Asia/Tokyo", "2026-03-08T20:00:00+09:00", "2026-03-09T00:00:00+09:00"),
    ],
)
def test_the_rest_of_day_ends_at_the_zones_midnight_across_dst(zone, now_iso, midnight_iso):
    from datetime import datetime

    from stream.horizons import horizons

    now = int(datetime.fromisoformat(now_iso).timestamp() * 1000)
    midnight = int(datetime.fromisoformat(midnight_iso).timestamp() * 1000)
    day_end = horizons(now, zone, 3_600_000).day_end_ms
    assert day_end == midnight
    r = ctr_rule(may_pause=True, pause_for="rest_of_day", **{"for": "0s"})
    track, verdict = step(r, Track(), now, BAD, None, TRUSTED, 0, False, day_end)
    assert verdict == PAUSE and track.until_ms == midnight
    _, verdict = step(r, track, midnight - 1, BAD, None, TRUSTED, 0, False, day_end)
    assert verdict is None
    _, verdict = step(r, track, midnight, BAD, None, TRUSTED, 0, False, day_end)
    assert verdict == RESUME


@pytest.mark.parametrize("action", ["pause", "notify"])
def test_a_hold_written_before_holds_ended_ends_too(action):
    """Holds persisted by earlier releases carry no end: a pause rule's ends at the campaign's
    next midnight; a notify rule's (notifies used to be held) is released at once."""
    fields = {"may_pause": True} if action == "pause" else {"action": "notify", "may_pause": False}
    r = ctr_rule(**fields)
    legacy = Track(HELD, last_action_ms=0, pauses=(0,))
    midnight = 10 * MIN
    held, verdict = step(r, legacy, MIN, GOOD, None, TRUSTED, 0, day_end_ms=midnight)
    if action == "pause":
        assert (held.phase, held.until_ms, verdict) == (HELD, midnight, None)
        after, _ = step(r, held, midnight, GOOD, None, TRUSTED, 0, day_end_ms=midnight + DAY)
        assert after.phase == RUNNING
    else:
        assert held.phase == RUNNING and verdict is None


def test_a_hold_without_the_campaigns_midnight_ends_a_day_later():
    r = ctr_rule(may_pause=True, max_cycles_per_day=1, **{"for": "0s"})
    track = Track(pauses=(0,), last_action_ms=0)
    held, verdict = step(r, track, 2 * MIN, BAD, None, TRUSTED, 0)
    assert (held.phase, verdict, held.until_ms) == (HELD, "hold", 2 * MIN + DAY)


def test_the_breaker_counts_an_any_rule_tripped_on_a_later_condition_as_active():
    """An ``any:`` rule holding on its second condition while its first has no value is tripped;
    it was not counted active, so tripped could exceed active and the share was overstated."""
    from autopause.engine import breaker_scopes

    r = rule(
        any=[{"kpi": "ctr", "window": "15m", "op": "<", "threshold": 0.005}] * 2, **{"for": "5m"}
    )
    second_only = Evaluation(
        True,
        None,
        None,
        None,
        parts=(Evaluation(False, None, None, None), Evaluation(True, 0.001, None, None)),
    )
    inputs = {f"c{i}": Input({r.name: second_only if i < 3 else GOOD}, {}, {}) for i in range(10)}
    breaker = Breaker(share=0.4, min_campaigns=3)
    scopes = breaker_scopes([r], {}, inputs, 0, breaker)
    # 3 tripped of 10 active: 30% is under the 40% share (counted 3 of 7 before: 43%, open).
    assert not scopes.everywhere[r.name]
