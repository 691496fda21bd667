"""The reference pauser's policy and ledger: which decisions it acts on, once."""

from __future__ import annotations

import sqlite3

import pytest

from autopause.ledger import Ledger
from autopause.policy import (
    ACT,
    DECLINE,
    DROP,
    KILL_SWITCH,
    NOTE,
    POPULATION_UNKNOWN,
    RATE_LIMIT,
    SHADOW,
    SHARE_LIMIT,
    SKIP,
    WAIT,
    Known,
    Limits,
    judge,
    validate,
)

NOW = 1_790_000_000_000
LIVE = Limits(mode="live", max_pauses_per_hour=2, max_share=0.5)
FRESH = Known(None, None, 0, 0, 100)
OURS = FRESH._replace(pausing=frozenset({"ctr_collapse"}))  # paused by this pauser for the rule


def decision(campaign="c1", seq=1, verdict="pause", valid_for=60_000, mode="live", **extra):
    return {
        "decision_id": f"{campaign}-{seq}",
        "campaign_id": campaign,
        "rule": "ctr_collapse",
        "verdict": verdict,
        "seq": seq,
        "issued_at_ms": NOW,
        "issued_at": "t",
        "valid_until_ms": NOW + valid_for,
        "mode": mode,
        **extra,
    }


@pytest.mark.parametrize(
    "name, d, known, limits, kill, expected",
    [
        ("acts on a fresh pause", decision(), FRESH, LIVE, False, ACT),
        (
            "acts on a resume of its own pause",
            decision(verdict="resume"),
            OURS,
            LIVE,
            False,
            ACT,
        ),
        (
            "declines a resume of a pause it did not make (a human's, or one dropped)",
            decision(verdict="resume"),
            FRESH,
            LIVE,
            False,
            DECLINE,
        ),
        (
            "declines a resume of a pause it made for another rule",
            decision(verdict="resume"),
            FRESH._replace(pausing=frozenset({"cpa_over_target"})),
            LIVE,
            False,
            DECLINE,
        ),
        (
            "declines a resume while another rule's pause of its own holds the campaign",
            decision(verdict="resume"),
            FRESH._replace(pausing=frozenset({"ctr_collapse", "cpa_over_target"})),
            LIVE,
            False,
            DECLINE,
        ),
        (
            "a replayed decision is skipped",
            decision(),
            FRESH._replace(outcome="done"),
            LIVE,
            False,
            SKIP,
        ),
        ("unknown is only noted", decision(verdict="unknown"), FRESH, LIVE, False, NOTE),
        (
            "notify is recorded, never acted on",
            decision(verdict="notify"),
            FRESH,
            LIVE,
            False,
            NOTE,
        ),
        ("suppressed is only noted", decision(verdict="suppressed"), FRESH, LIVE, False, NOTE),
        ("expired", decision(valid_for=-1), FRESH, LIVE, False, DROP),
        ("out of order", decision(seq=2), FRESH._replace(last_seq=3), LIVE, False, DROP),
        (
            "not allowed",
            decision(campaign="brand-1"),
            FRESH,
            Limits("live", allow="perf-.*"),
            False,
            DROP,
        ),
        (
            "allowed",
            decision(campaign="perf-1"),
            FRESH,
            Limits("live", allow="perf-.*"),
            False,
            ACT,
        ),
        ("pauser in shadow mode", decision(), FRESH, Limits(), False, SHADOW),
        ("shadow decision", decision(mode="shadow"), FRESH, LIVE, False, SHADOW),
        ("kill switch", decision(), FRESH, LIVE, True, WAIT),
        ("rate breaker", decision(), FRESH._replace(pauses_last_hour=2), LIVE, False, WAIT),
        ("share breaker", decision(), Known(None, None, 0, 50, 100), LIVE, False, WAIT),
        (
            "a small account: 1 of 3 is below --min-campaigns, the share says nothing",
            decision(),
            Known(None, None, 0, 0, 3),
            Limits("live", max_share=0.2, min_campaigns=5),
            False,
            ACT,
        ),
        (
            "below --min-campaigns an unknown population does not hold either",
            decision(),
            Known(None, None, 0, 0, 0),
            Limits("live", min_campaigns=5),
            False,
            ACT,
        ),
        (
            "from --min-campaigns on, the share applies",
            decision(),
            Known(None, None, 0, 4, 6),
            Limits("live", max_share=0.2, min_campaigns=5),
            False,
            WAIT,
        ),
        (
            "from --min-campaigns on, an unknown population holds",
            decision(),
            Known(None, None, 0, 4, 0),
            Limits("live", min_campaigns=5),
            False,
            WAIT,
        ),
        (
            "a resume passes the breakers",
            decision(verdict="resume"),
            Known(None, None, 5, 50, 100, frozenset({"ctr_collapse"})),
            LIVE,
            False,
            ACT,
        ),
    ],
)
def test_judge(name, d, known, limits, kill, expected):
    assert judge(d, NOW, known, limits, kill_switch=kill).kind == expected


def test_ledger_knows_what_was_done(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    first = decision()
    assert ledger.known(first, NOW).outcome is None
    ledger.record(first, NOW, "started", action="pause", attempts=1)
    assert ledger.known(first, NOW).outcome is None  # started is not an outcome: run again
    ledger.record(first, NOW, "done", action="pause", acted_at_ms=NOW, prior_state="running")
    assert ledger.known(first, NOW).outcome == "done"
    later = decision(seq=2, verdict="unknown")
    assert ledger.known(later, NOW) == Known(None, 1, 1, 1, 0, frozenset({"ctr_collapse"}))
    ledger.note_partition_size(0, 40)
    ledger.note_partition_size(1, 60)
    ledger.note_partition_size(0, 50)
    assert ledger.campaigns_seen() == 110
    ledger.record(
        decision(seq=3, verdict="resume"), NOW + 1, "done", action="resume", acted_at_ms=NOW + 1
    )
    assert ledger.paused_campaigns() == 0
    assert ledger.known(first, NOW + 3_600_001).pauses_last_hour == 0
    ledger.close()
    reopened = Ledger(tmp_path / "l.sqlite")
    assert [e.seq for e in reopened.history()] == [3, 1]


@pytest.mark.parametrize(
    "known, limits, kill, held_by",
    [
        (FRESH, LIVE, True, KILL_SWITCH),
        (FRESH._replace(pauses_last_hour=2), LIVE, False, RATE_LIMIT),
        (Known(None, None, 0, 50, 100), LIVE, False, SHARE_LIMIT),
        (Known(None, None, 0, 4, 0), Limits("live", min_campaigns=5), False, POPULATION_UNKNOWN),
    ],
)
def test_every_hold_names_its_reason(known, limits, kill, held_by):
    assert judge(decision(), NOW, known, limits, kill_switch=kill)[::2] == (WAIT, held_by)


def test_an_expired_decision_is_dropped_whatever_holds(tmp_path):
    held = Known(None, None, 0, 50, 100)
    assert judge(decision(valid_for=-1), NOW, held, LIVE, kill_switch=True).kind == DROP


@pytest.mark.parametrize(
    "value, problem",
    [
        (decision(), None),
        (decision(campaign="* ; x", evidence={"any": ["thing"]}), None),
        (decision(campaign="kampagne-ü-🚀"), None),
        ({**decision(), "campaign_id": "c" * 256}, None),
        ("a string", "not a JSON object"),
        (None, "not a JSON object"),
        ({**decision(), "campaign_id": "c" * 257}, "campaign_id length 257"),
        ({**decision(), "campaign_id": "a\tb"}, "campaign_id holds U+0009"),
        ({**decision(), "campaign_id": "a\x1fb"}, "campaign_id holds U+001F"),
        ({**decision(), "decision_id": 7}, "decision_id not a string (int)"),
        ({**decision(), "rule": None}, "rule not a string"),
        ({**decision(), "verdict": 1}, "verdict is not a string"),
        ({**decision(), "seq": 1.0}, "seq is not an integer"),
        ({**decision(), "seq": False}, "seq is not an integer"),
        ({**decision(), "valid_until_ms": "soon"}, "valid_until_ms is not an integer"),
        ({**decision(), "issued_at_ms": -5}, "issued_at_ms is not a non-negative integer"),
        ({**decision(), "issued_at": 5}, "issued_at is not a string"),
    ],
)
def test_validate(value, problem):
    result = validate(value)
    if problem is None:
        assert result == value
    else:
        assert isinstance(result, str) and result.startswith(problem), result


def test_a_claim_is_taken_once_and_only_an_unrenewed_one_is_taken_over(tmp_path):
    """Another owner's claim is live until this ledger has watched it unchanged (owner, beat) for
    a lease of the caller's monotonic clock, or its owner is known to have ended; the wall clock
    (``now_ms``, only written down) decides nothing."""
    first, second = Ledger(tmp_path / "l.sqlite"), Ledger(tmp_path / "l.sqlite")
    d, day = decision(), 86_400_000

    def claim(ledger, owner, wall, mono, gone=lambda owner: False):
        return ledger.claim(
            d, owner, wall, 60_000, monotonic_ms=mono, action="pause", attempts=1, owner_gone=gone
        )

    assert claim(first, "a", NOW, 0).won
    assert second.get(d["decision_id"]).outcome == "started"
    assert claim(second, "b", NOW + day, 5_000) == (False, None, "a", None)  # the watch starts
    assert claim(second, "b", NOW + day, 65_000 - 1) == (False, None, "a", None)  # under a lease
    assert claim(first, "a", NOW, 0).won  # a renews its own at its next attempt
    assert first.renew(d["decision_id"], "a", NOW - day)  # and while it acts
    assert claim(second, "b", NOW + day, 65_000) == (False, None, "a", None)  # renewed: watch again
    assert claim(second, "b", NOW + 2 * day, 125_000 - 1) == (False, None, "a", None)
    # Unrenewed for a lease of b's own clock, whatever the wall clock says: the crash case.
    assert claim(second, "b", NOW - day, 125_000) == (True, None, "b", "a")
    assert second.get(d["decision_id"]).outcome == "started"
    assert not first.renew(d["decision_id"], "a", NOW)  # a finds its claim lost
    assert not first.record(d, NOW, "done", action="pause", owner="a")  # and records nothing
    assert first.get(d["decision_id"]).outcome == "started"
    assert claim(first, "a", NOW, 0) == (False, None, "b", None)  # a now waits on b
    assert claim(first, "a", NOW, 1, gone=lambda o: o == "b") == (True, None, "a", "b")  # b ended
    assert first.record(d, NOW, "done", action="pause", acted_at_ms=NOW, owner="a")
    finished = claim(second, "b", NOW + 10**9, 10**9)
    assert finished == (False, "done", None, None)  # nobody claims a finished decision
    assert not second.record(d, NOW, "dropped", keep_final=True)  # nor overwrites the outcome
    assert first.get(d["decision_id"]).outcome == "done"


def test_a_ledger_written_before_claims_had_beats_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE claims (decision_id TEXT PRIMARY KEY, owner TEXT NOT NULL,
                             claimed_at_ms INTEGER NOT NULL);
        INSERT INTO claims VALUES ('c1-1', 'old-host:7:1700000000000000000', 0);
    """)
    db.close()
    ledgers = [Ledger(path), Ledger(path)]  # the second finds it migrated
    d = decision()

    def claim(ledger, mono):
        return ledger.claim(d, "new", NOW, 60_000, monotonic_ms=mono, action="pause", attempts=1)

    assert claim(ledgers[0], 0) == (False, None, "old-host:7:1700000000000000000", None)
    assert claim(ledgers[0], 60_000) == (True, None, "new", "old-host:7:1700000000000000000")
    assert ledgers[1].renew("c1-1", "new", NOW)
    assert sqlite3.connect(path).execute("SELECT owner, beat FROM claims").fetchall() == [
        ("new", 2)
    ]


def test_an_action_that_may_have_run_is_never_overwritten_and_its_resume_acts(tmp_path):
    """A pauser killed mid-command left ``started``; the decision expired before the lease ran
    out, so the next pauser drops it: the row keeps its action (undo, limits and the midnight
    resume still see it), and the campaign's resume is run, not declined."""
    ledger = Ledger(tmp_path / "ledger.sqlite")
    pause = decision("c1", 1)
    ledger.record(pause, NOW, "started", action="pause", attempts=1)
    assert not ledger.record(
        pause, NOW + 1, "dropped", "expired", keep_final=True, keep_attempt=True
    )
    entry = ledger.get(pause["decision_id"])
    assert (entry.outcome, entry.action) == ("started", "pause")
    assert ledger.pausing_rules("c1") == {"ctr_collapse"}
    resume = decision("c1", 2, verdict="resume")
    known = ledger.known(resume, NOW + 2)
    assert judge(resume, NOW + 2, known, LIVE).kind == ACT
