"""An operator's release of a held campaign: the query string is a boundary (a table of hostile
queries, each refused with its reason), and the release itself takes the held tracks back and
writes them."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from agents.decisions import release_request
from autopause import records
from autopause.engine import HELD, PAUSED, RUNNING, Campaign, Track
from autopause.runner import Runner
from stream.codec import AUTOPAUSE, key
from stream.settings import Settings
from stream.state import PartitionState
from tests.state_harness import CONFIG

NOW = 1_790_000_000_000


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"campaign": "c1"}, ("c1", None)),
        ({"campaign": "c1", "rule": "ctr_collapse"}, ("c1", "ctr_collapse")),
        ({}, "campaign is required"),
        ({"rule": "ctr_collapse"}, "campaign is required"),
        ({"campaign": ""}, "campaign must be 1-256 characters"),
        ({"campaign": "c" * 257}, "campaign must be 1-256 characters"),
        ({"campaign": "c\x00"}, "campaign holds U+0000"),
        ({"campaign": "c\u202e1"}, "campaign holds U+202E"),
        ({"campaign": "c1", "rule": "r\n"}, "rule holds U+000A"),
        ({"campaign": "c1", "all": "1"}, "unknown parameter 'all'"),
        (MultiDict([("campaign", "c1"), ("campaign", "c2")]), "campaign is given more than once"),
        (MultiDict([("campaign", "c1"), ("rule", "a"), ("rule", "b")]), "rule is given more"),
    ],
)
def test_a_release_query_is_read_or_refused_with_its_reason(query, expected):
    got = release_request(query)
    if isinstance(expected, tuple):
        assert got == expected
    else:
        assert isinstance(got, str) and got.startswith(expected)


def test_a_release_takes_the_held_rules_back_and_writes_them():
    state = PartitionState(3, CONFIG)
    held = Track(HELD, last_action_ms=NOW, pauses=(NOW - 1, NOW), until_ms=NOW + 3_600_000)
    paused = Track(PAUSED, last_action_ms=NOW, pauses=(NOW,))
    state.autopause["c1"] = Campaign(NOW - 86_400_000, 7, {"a": held, "b": paused, "c": held})
    runner = Runner([], Settings())
    released, written = runner.release([state], "c1", "a", NOW)
    assert released == [{"partition": 3, "rule": "a"}]
    campaign = state.autopause["c1"]
    assert isinstance(campaign, Campaign)
    assert campaign.tracks["a"].phase == RUNNING and campaign.tracks["a"].until_ms is None
    assert campaign.tracks["a"].pauses == held.pauses  # the breaker's window keeps them
    assert campaign.tracks["b"] == paused and campaign.tracks["c"] == held
    assert written == [records.record(3, "c1", campaign)]
    assert written[0][0] == key(3, AUTOPAUSE, "c1")
    # Every held rule when none is named; nothing held: nothing released, nothing written.
    assert runner.release([state], "c1", None, NOW)[0] == [{"partition": 3, "rule": "c"}]
    assert runner.release([state], "c1", None, NOW) == ([], [])
    assert runner.release([state], "elsewhere", None, NOW) == ([], [])
