"""The reference pauser's policy and ledger: which decisions it acts on, once."""

from __future__ import annotations

import pytest

from autopause.ledger import Ledger
from autopause.policy import ACT, DROP, NOTE, SHADOW, SKIP, WAIT, Known, Limits, judge

NOW = 1_790_000_000_000
LIVE = Limits(mode="live", max_pauses_per_hour=2, max_share=0.5)
FRESH = Known(None, None, 0, 0, 100)


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
        ("acts on a resume", decision(verdict="resume"), FRESH, LIVE, False, ACT),
        (
            "a replayed decision is skipped",
            decision(),
            FRESH._replace(outcome="done"),
            LIVE,
            False,
            SKIP,
        ),
        ("unknown is only noted", decision(verdict="unknown"), FRESH, LIVE, False, NOTE),
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
            "a resume passes the breakers",
            decision(verdict="resume"),
            Known(None, None, 5, 50, 100),
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
    assert ledger.known(later, NOW) == Known(None, 1, 1, 1, 0)
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
